"""The class whitelist file (successors.md §1: the starter's segment_label_ids.csv)."""

import pytest

from yt8m.segments.errors import SegmentError
from yt8m.segments.whitelist import read_segment_label_ids


def whitelist(tmp_path, text):
    path = tmp_path / "segment_label_ids.csv"
    path.write_text(text)
    return str(path)


def test_the_starters_format_is_read_sorted(tmp_path):
    path = whitelist(tmp_path, "Index\n11\n3\n7\n\n8\n")
    assert read_segment_label_ids(path, 3862).tolist() == [3, 7, 8, 11]
    crlf = whitelist(tmp_path, "\ufeffIndex\r\n5\r\n")
    assert read_segment_label_ids(crlf, 10).tolist() == [5]


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "line 1: the header must be 'Index'.*an empty file"),
        ("3\n7\n", "line 1: the header must be 'Index'.*found '3'"),
        ("Index\n3\nseven\n", "line 3: 'seven' is not a class index"),
        ("Index\n3\n3862\n", "line 3: class 3862 is outside 0..3861"),
        ("Index\n-1\n", "line 2: class -1 is outside"),
        ("Index\n3\n5\n3\n", "line 4: class 3 is listed twice \\(lines 2 and 4\\)"),
        ("Index\n\n", "lists no class"),
    ],
)
def test_a_malformed_file_is_an_error_naming_the_line(tmp_path, text, message):
    with pytest.raises(SegmentError, match=message):
        read_segment_label_ids(whitelist(tmp_path, text), 3862)


def test_a_missing_empty_or_remote_name_is_an_error_naming_the_flag(tmp_path):
    with pytest.raises(SegmentError, match="--segment_label_ids_file=.*nope.csv: no such file"):
        read_segment_label_ids(str(tmp_path / "nope.csv"), 3862)
    with pytest.raises(SegmentError, match="--segment_label_ids_file is empty"):
        read_segment_label_ids("", 3862)
    url = "https://raw.githubusercontent.com/google/youtube-8m/master/segment_label_ids.csv"
    with pytest.raises(SegmentError, match="a remote file; download it"):
        read_segment_label_ids(url, 3862)
