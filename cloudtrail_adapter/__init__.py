"""Ships AWS CloudTrail events from S3 or SQS into LimaCharlie."""

__version__ = "0.1.0"
