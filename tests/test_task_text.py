"""Task text in the shards: Meta-World names, each clip's ``meta.json`` ``extra.task`` through the writer and the
loader (``batch["task"]``), and datasets without it loading as before."""

from __future__ import annotations

from conftest import action_space, make_clip, write_dataset

from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.schema import ClipMeta
from wm_video.data.writer import ShardWriter, finalize_dataset
from wm_video.envs.metaworld_env import task_text


def test_metaworld_task_text_is_the_name_without_its_version():
    assert task_text("metaworld/reach-v3") == "reach"
    assert task_text("metaworld/pick-place-v3") == "pick place"
    assert task_text("metaworld/button-press-topdown-wall-v3") == "button press topdown wall"
    assert task_text("ALE/Pong-v5") is None


def test_clip_meta_task_reads_extra_task():
    meta = ClipMeta("ep", 0, 4, 15.0, "test", [], extra={"task": "open the drawer"})
    assert meta.task == "open the drawer"
    assert ClipMeta("ep", 0, 4, 15.0, "test", []).task is None
    assert ClipMeta("ep", 0, 4, 15.0, "test", [], extra={"task": " "}).task is None  # blank: no task
    assert ClipMeta.from_dict({**vars(meta)}).task == "open the drawer"


def _loader(root) -> ClipLoader:
    return ClipLoader(root, LoaderConfig(batch_size=3, num_workers=0, shuffle_buffer=0))


def test_the_loader_yields_each_clips_task(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    texts = ["reach", None, "push the block"]
    with ShardWriter(root / "shard-000000.tar", action_space("discrete")) as w:
        for i, text in enumerate(texts):
            clip = make_clip(i, 0)
            if text:
                clip.meta.extra["task"] = text
            w.write(clip)
        w.close()
    finalize_dataset(root, [root / "shard-000000.tar"], resolution=[8, 8], fps=15.0, clip_len=4, storage="raw",
                     action_space=action_space("discrete"), source={"kind": "test"})
    (batch,) = list(_loader(root))
    assert batch["task"] == texts


def test_a_dataset_without_task_text_loads_as_before(tmp_path):
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=3)
    (batch,) = list(_loader(tmp_path / "ds"))
    assert "task" not in batch
