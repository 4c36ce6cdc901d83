"""The one JSONL reader: every file a user gives r1pipe is read the same way (issue 12: a
byte order mark was accepted by training but refused by ``eval predictions=``)."""

import json

import pytest

from r1pipe.benchmarks import load_predictions
from r1pipe.config.schema import BenchConfig
from r1pipe.data.general import load_general
from r1pipe.data.jsonl import read_jsonl
from r1pipe.errors import UserError

BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_is_accepted_by_every_reader(tmp_path):
    pred = tmp_path / "pred.jsonl"
    pred.write_bytes(
        BOM + json.dumps({"id": "1", "completion": "\\boxed{3}", "answer": "3"}).encode()
    )
    (p,), _ = load_predictions(str(pred), BenchConfig())
    assert p.id == "1" and p.completions == ["\\boxed{3}"]
    general = tmp_path / "g.jsonl"
    general.write_bytes(BOM + b'{"prompt": "hi", "response": "hello"}\n')
    assert load_general(str(general), "k")[0].prompt == "hi"
    assert read_jsonl(general, "k") == [(1, {"prompt": "hi", "response": "hello"})]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"a": 1}\n{"a": "\xff"}\n',
            "{f}:2: not UTF-8 text (byte 0xff at column 8); save it as UTF-8",
        ),
        (b"", "K={f}: is empty (0 bytes)"),
        (b"\n \n", "K={f}: the file has no rows (only blank lines)"),
        (b'"text"\n', '{f}:1: expected a JSON object per line, got a string ("text")'),
    ],
)
def test_unreadable_files_in_one_line(tmp_path, content, message):
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_jsonl(f, "K")
    assert str(e.value) == message.format(f=f)
