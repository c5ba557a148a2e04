"""The committed Python contracts are exactly what protoc generates from proto/ today."""

from __future__ import annotations

from pathlib import Path

from meridian_cli.scripts import load_script

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "libs" / "common" / "src" / "meridian" / "v1"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generated = load_script("gen_proto").generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in generated}
    committed = {p.name: p.read_bytes() for p in COMMITTED.glob("*_pb2.py*")}
    assert sorted(fresh) == sorted(committed), "a .proto was added or removed: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"generated code out of date for {stale}: run `make proto`"


def test_every_proto_defines_a_topic_message_or_shared_types() -> None:
    from meridian_common import topics

    protos = {p.stem for p in (REPO / "proto" / "meridian" / "v1").glob("*.proto")}
    files = {Path(spec.message.DESCRIPTOR.file.name).stem for spec in topics.TOPICS.values()}
    assert protos - files == {"common"}
