"""What runs in the worker processes: object bytes in, batch fragments out.

`decode` reads a document whole, `stream_decode` in steps (its text from `inflating`, a
step at a time), `salvage` what the strict decoders refuse; `packing` decides which of them
an object takes; `batches` turns records into deflate fragments, `event_keys` gives them
their de-duplication keys and `filters` drops what the config excludes. Pure and
CPU-bound: no asyncio, no logging, no state.
"""
