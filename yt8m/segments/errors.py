"""The error type of the 2019 segment task (whitelist, rated records, submissions)."""

from yt8m.errors import YT8MError


class SegmentError(YT8MError, ValueError):
    """Bad input of the segment task; the message names the file, line or record, the flag
    and what to do."""
