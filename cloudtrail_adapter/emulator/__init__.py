"""Stand-ins for the outside world: a LimaCharlie emulator, a CloudTrail corpus, the demo."""
