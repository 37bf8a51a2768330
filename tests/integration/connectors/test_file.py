"""The ``file`` connector and uploads: formats, batches, bad content, the root check and the URL policy."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfserve.data.connectors import build, read_upload
from selfserve.errors import InvalidInput, ServiceUnavailable
from selfserve.settings import Settings, get_settings
from tests.integration.connectors.conftest import read_all

pytestmark = pytest.mark.integration


def write_csv(path: Path, rows: int) -> Path:
    lines = ["id,name,score,when"]
    lines += [f"{i},name {i},{i * 1.5},2024-01-{1 + i % 28:02d}T10:00:00" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def web(root: Path) -> Iterator[str]:
    """A local HTTP server serving ``root``."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- formats -----------------------------------------------------------------------------------


def test_csv_types_and_batches(root: Path, settings: Settings) -> None:
    path = write_csv(root / "people.csv", 25)
    table, sizes = read_all(build("file", {"path": str(path)}, {}, settings), batch_rows=10)
    assert sizes == [10, 10, 5]
    assert table.num_rows == 25
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("name").type == pa.string()
    assert pa.types.is_timestamp(table.schema.field("when").type)
    assert table.column("id").to_pylist() == list(range(25))


def test_csv_options(root: Path, settings: Settings) -> None:
    (root / "semi.txt").write_text("1;é;x\n2;ü;y\n", encoding="latin-1")
    config = {"path": str(root / "semi.txt"), "delimiter": ";", "header": False, "encoding": "latin-1"}
    table, _ = read_all(build("file", config, {}, settings))
    assert table.num_rows == 2
    assert table.column(1).to_pylist() == ["é", "ü"]
    (root / "tabs.tsv").write_text("a\tb\n1\t2\n")
    table, _ = read_all(build("file", {"path": str(root / "tabs.tsv")}, {}, settings))
    assert table.column_names == ["a", "b"]


def test_compressed_csv(root: Path, settings: Settings) -> None:
    (root / "data.csv.gz").write_bytes(gzip.compress(b"x,y\n1,2\n3,4\n"))
    table, _ = read_all(build("file", {"path": str(root / "data.csv.gz")}, {}, settings))
    assert table.to_pylist() == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


def test_parquet_in_batches(root: Path, settings: Settings) -> None:
    source = pa.table({"n": pa.array(range(1000), pa.int32()), "s": [f"v{i}" for i in range(1000)]})
    pq.write_table(source, root / "numbers.parquet", row_group_size=300)
    table, sizes = read_all(build("file", {"path": str(root / "numbers.parquet")}, {}, settings), batch_rows=400)
    assert max(sizes) <= 400 and sum(sizes) == 1000
    assert table.schema.field("n").type == pa.int32()
    assert table.equals(source)


def test_json_array_and_ndjson(root: Path, settings: Settings) -> None:
    records = [{"id": i, "tags": ["a", "b"], "meta": {"k": i}, "maybe": None if i % 2 else i} for i in range(7)]
    (root / "array.json").write_text(json.dumps(records))
    (root / "lines.ndjson").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name in ("array.json", "lines.ndjson"):
        table, sizes = read_all(build("file", {"path": str(root / name)}, {}, settings), batch_rows=3)
        assert sizes == [3, 3, 1], name
        assert table.column("id").to_pylist() == list(range(7))
        assert table.schema.field("id").type == pa.int64()
        # Nested values are kept as JSON text, so every batch has the same schema.
        assert json.loads(table.column("meta")[2].as_py()) == {"k": 2}
        assert table.column("maybe").to_pylist()[:2] == [0, None]


def test_json_file_holding_ndjson(root: Path, settings: Settings) -> None:
    (root / "events.json").write_text('{"a": 1}\n{"a": 2}\n')
    table, _ = read_all(build("file", {"path": str(root / "events.json")}, {}, settings))
    assert table.column("a").to_pylist() == [1, 2]


def test_directory_source_with_table(root: Path, settings: Settings) -> None:
    (root / "sub").mkdir()
    write_csv(root / "sub" / "a.csv", 3)
    connector = build("file", {"path": str(root / "sub"), "format": "csv"}, {}, settings)
    connector.test()
    table, _ = read_all(connector, table="a.csv")
    assert table.num_rows == 3
    with pytest.raises(InvalidInput, match="outside"):
        read_all(connector, table="../../elsewhere.csv")


def test_incremental_filters_client_side(root: Path, settings: Settings) -> None:
    path = write_csv(root / "inc.csv", 20)
    connector = build("file", {"path": str(path)}, {}, settings)
    table, _ = read_all(connector, cursor_column="id", watermark=14)
    assert table.column("id").to_pylist() == [15, 16, 17, 18, 19]
    table, _ = read_all(connector, cursor_column="when", watermark=datetime(2024, 1, 19, 10))
    assert sorted(set(table.column("id").to_pylist())) == [19]
    with pytest.raises(InvalidInput, match="cursor column 'nope'"):
        read_all(connector, cursor_column="nope", watermark=1)


# -- bad content -------------------------------------------------------------------------------


def test_ragged_csv_names_the_line(root: Path, settings: Settings) -> None:
    (root / "ragged.csv").write_text("a,b,c\n1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(InvalidInput, match=r"line 4 has 2 fields where the header has 3"):
        read_all(build("file", {"path": str(root / "ragged.csv")}, {}, settings))


def test_wrong_encoding_names_it(root: Path, settings: Settings) -> None:
    (root / "latin.csv").write_bytes("city,n\nParis,1\nBogotá,2\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match=r"not valid utf-8 text \(line 3\).*encoding"):
        read_all(build("file", {"path": str(root / "latin.csv")}, {}, settings))
    table, _ = read_all(build("file", {"path": str(root / "latin.csv"), "encoding": "latin-1"}, {}, settings))
    assert table.column("city").to_pylist() == ["Paris", "Bogotá"]


@pytest.mark.parametrize("name", ["empty.csv", "empty.json", "empty.ndjson", "empty.parquet"])
def test_empty_file(root: Path, settings: Settings, name: str) -> None:
    (root / name).write_bytes(b"")
    with pytest.raises(InvalidInput, match="is empty"):
        read_all(build("file", {"path": str(root / name)}, {}, settings))


def test_blank_json_is_empty(root: Path, settings: Settings) -> None:
    (root / "blank.ndjson").write_text("\n\n")
    with pytest.raises(InvalidInput, match="is empty"):
        read_all(build("file", {"path": str(root / "blank.ndjson")}, {}, settings))


def test_unparseable_json(root: Path, settings: Settings) -> None:
    (root / "bad.json").write_text('[{"a": 1},\n {"a": }]')
    with pytest.raises(InvalidInput, match=r"not valid JSON: Expecting value at line 2"):
        read_all(build("file", {"path": str(root / "bad.json")}, {}, settings))
    (root / "bad.ndjson").write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(InvalidInput, match=r"not valid JSON: .* at line 2"):
        read_all(build("file", {"path": str(root / "bad.ndjson")}, {}, settings))
    (root / "scalar.json").write_text('{"a": 1}')
    with pytest.raises(InvalidInput, match="array of objects"):
        read_all(build("file", {"path": str(root / "scalar.json")}, {}, settings))


def test_not_parquet(root: Path, settings: Settings) -> None:
    (root / "fake.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="not a valid Parquet file"):
        read_all(build("file", {"path": str(root / "fake.parquet")}, {}, settings))


def test_unknown_format(root: Path, settings: Settings) -> None:
    (root / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(InvalidInput, match="cannot tell the format"):
        read_all(build("file", {"path": str(root / "data.xlsx")}, {}, settings))


# -- where files may come from -----------------------------------------------------------------


def test_path_outside_roots_is_refused(root: Path, settings: Settings, tmp_path: Path) -> None:
    write_csv(tmp_path / "secret.csv", 1)
    escaping = f"{root}/../secret.csv"
    with pytest.raises(InvalidInput, match=r"outside the directories open to file sources") as err:
        read_all(build("file", {"path": escaping}, {}, settings))
    assert escaping in err.value.message


def test_symlink_out_of_root_is_refused(root: Path, settings: Settings, tmp_path: Path) -> None:
    write_csv(tmp_path / "private.csv", 1)
    (root / "link.csv").symlink_to(tmp_path / "private.csv")
    with pytest.raises(InvalidInput, match="outside"):
        read_all(build("file", {"path": str(root / "link.csv")}, {}, settings))


def test_missing_and_relative_paths(root: Path, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        read_all(build("file", {"path": str(root / "nope.csv")}, {}, settings))
    with pytest.raises(InvalidInput, match="must be absolute"):
        read_all(build("file", {"path": "nope.csv"}, {}, settings))


def test_no_roots_configured(root: Path) -> None:
    write_csv(root / "a.csv", 1)
    with pytest.raises(InvalidInput, match=r"an admin must allow one in data.file_roots"):
        read_all(build("file", {"path": str(root / "a.csv")}, {}, get_settings()))


def test_bad_config() -> None:
    with pytest.raises(InvalidInput, match="exactly one of path or url"):
        build("file", {}, {})
    with pytest.raises(InvalidInput, match="delimiter"):
        build("file", {"path": "/x.csv", "delimiter": ";;"}, {})
    with pytest.raises(InvalidInput, match="unknown encoding"):
        build("file", {"path": "/x.csv", "encoding": "klingon"}, {})
    with pytest.raises(InvalidInput, match="Extra inputs are not permitted"):
        build("file", {"path": "/x.csv", "colour": "red"}, {})


# -- URLs --------------------------------------------------------------------------------------


def test_url_download(root: Path, settings: Settings, web: str) -> None:
    write_csv(root / "remote.csv", 12)
    connector = build("file", {"url": f"{web}/remote.csv"}, {}, settings)
    connector.test()
    table, sizes = read_all(connector, batch_rows=5)
    assert sizes == [5, 5, 2]
    assert table.column("id").to_pylist() == list(range(12))


def test_url_errors(settings: Settings, web: str, closed_port: int) -> None:
    with pytest.raises(InvalidInput, match="HTTP 404"):
        read_all(build("file", {"url": f"{web}/missing.csv"}, {}, settings))
    with pytest.raises(ServiceUnavailable, match="cannot reach"):
        read_all(build("file", {"url": f"http://127.0.0.1:{closed_port}/a.csv"}, {}, settings))
    with pytest.raises(InvalidInput, match="http"):
        build("file", {"url": "ftp://example.org/a.csv"}, {}, settings).test()


def test_private_url_refused_when_not_allowed(
    root: Path, web: str, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    write_csv(root / "remote.csv", 2)
    monkeypatch.setenv("SELFSERVE_DATA__ALLOW_PRIVATE_URLS", "false")
    get_settings.cache_clear()
    locked = get_settings()
    assert locked.data.allow_private_urls is False
    with pytest.raises(InvalidInput, match=r"127\.0\.0\.1 is a loopback address"):
        read_all(build("file", {"url": f"{web}/remote.csv"}, {}, locked))
    with pytest.raises(InvalidInput, match="loopback"):
        build("file", {"url": web.replace("127.0.0.1", "localhost") + "/remote.csv"}, {}, locked).test()


# -- uploads -----------------------------------------------------------------------------------


def test_read_upload_skips_the_root_check(tmp_path: Path) -> None:
    saved = tmp_path / "upload-1234"
    saved.write_text("a|b\n1|x\n2|y\n")
    batches = list(read_upload(saved, "csv", {"delimiter": "|"}, batch_rows=1, name="mine.csv"))
    assert [b.num_rows for b in batches] == [1, 1]
    assert pa.Table.from_batches(batches).column("b").to_pylist() == ["x", "y"]
    with pytest.raises(InvalidInput, match="cannot tell the format of 'upload-1234'"):
        read_upload(saved, None, {})
    (tmp_path / "bad.csv").write_text("a,b\n1\n")
    with pytest.raises(InvalidInput, match=r"mine\.csv: line 2"):
        list(read_upload(tmp_path / "bad.csv", None, {}, name="mine.csv"))
    with pytest.raises(InvalidInput, match="invalid file options"):
        read_upload(saved, "csv", {"sheet": 1})
