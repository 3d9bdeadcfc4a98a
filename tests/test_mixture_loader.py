"""Domain mixtures: single-domain batches by weight, the same draw on every rank, exact resume, clear spec errors."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_clip, write_token_dataset

from wm_video.config import apply
from wm_video.data import mixture
from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.mixture import DomainMixLoader, MixtureError, MixtureSource, MixtureSpec, draw_domains
from wm_video.data.schema import ActionSpace
from wm_video.data.writer import ShardWriter, finalize_dataset

SPACES = {"disc": ActionSpace("discrete", n=4), "cont": ActionSpace("continuous", dim=2, low=[-1, -1], high=[1, 1]),
          "video": ActionSpace("none")}


def write_source(root: Path, name: str, shards: int = 4, clips: int = 6, t: int = 4, size: int = 8) -> dict:
    """A dataset of ``SPACES[name]`` (one episode per shard); returns its clips by key."""
    kind = {"disc": "discrete", "cont": "continuous", "video": "none"}[name]
    root.mkdir(parents=True)
    paths, by_key = [], {}
    for s in range(shards):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, SPACES[name], "raw") as w:
            for i in range(clips):
                clip = make_clip(s, i * t, t, size, kind)
                if name == "disc":
                    clip.actions = clip.actions % 4
                elif name == "cont":
                    clip.actions = np.ascontiguousarray(clip.actions[:, :2])
                w.write(clip)
                by_key[clip.key] = clip
            w.close()
        paths.append(path)
    finalize_dataset(root, paths, resolution=[size, size], fps=15.0, clip_len=t, storage="raw",
                     action_space=SPACES[name], source={"kind": "test"})
    return by_key


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three 8x8 datasets: discrete n=4, continuous dim 2, action-free; (folders by name, clips by name and key)."""
    tmp = tmp_path_factory.mktemp("mix")
    clips = {name: write_source(tmp / name, name, clips=12) for name in SPACES}
    return {name: str(tmp / name) for name in SPACES}, clips


def cfg(**kw) -> LoaderConfig:
    return LoaderConfig(**{**dict(batch_size=2, num_workers=0, shuffle_buffer=4, seed=7), **kw})


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def spec(dirs: dict, **weights: float) -> list[dict]:
    return [{"path": dirs[name], "weight": w} for name, w in weights.items()]


def test_batches_are_single_domain_with_their_own_action_space(sources):
    dirs, clips = sources
    loader = DomainMixLoader(spec(dirs, disc=1, cont=1, video=1), cfg())
    batches = take(loader, 30)
    assert {b["domain"] for b in batches} == set(SPACES)
    for b in batches:
        name = b["domain"]
        assert isinstance(name, str) and b["frames"].shape == (2, 4, 3, 8, 8)
        for i, key in enumerate(b["key"]):  # every clip of the batch is the source's own
            want = clips[name][key]
            assert torch.equal(b["frames"][i].permute(0, 2, 3, 1), torch.from_numpy(want.frames))
            if name != "video":
                assert torch.equal(b["actions"][i], torch.from_numpy(want.actions))
        if name == "disc":
            assert b["actions"].dtype == torch.int64 and b["actions"].shape == (2, 4) and b["actions"].max() < 4
        elif name == "cont":
            assert b["actions"].dtype == torch.float32 and b["actions"].shape == (2, 4, 2)
        else:
            assert not {"actions", "rewards", "terminations"} & set(b)
        if name != "video":
            assert b["rewards"].shape == (2, 4) and b["terminations"].dtype == torch.bool


def test_domains_expose_action_spaces_and_stats(sources):
    dirs, _ = sources
    loader = DomainMixLoader([{"path": dirs["disc"], "weight": 3}, {"path": dirs["cont"], "domain": "arm"},
                              dirs["video"]], cfg())
    d = loader.domains
    assert list(d) == ["disc", "arm", "video"]
    assert d["disc"].action_space.n == 4 and d["disc"].weight == pytest.approx(0.6)
    assert d["arm"].action_space.dim == 2 and len(d["arm"].action_stats["mean"]) == 2
    assert len(d["arm"].action_stats["std"]) == 2 and len(d["disc"].action_stats["counts"]) == 4
    assert d["video"].action_space.kind == "none" and d["video"].action_stats == {}


def test_domain_frequencies_follow_the_weights_and_weight_zero_is_never_drawn(sources):
    dirs, _ = sources
    loader = DomainMixLoader(spec(dirs, disc=0.75, cont=0.25, video=0), cfg(batch_size=1))
    counts = Counter(b["domain"] for b in take(loader, 200))  # sources restart their epochs many times over
    assert counts["video"] == 0
    assert abs(counts["disc"] / 200 - 0.75) < 0.07
    many = Counter(draw_domains([3.0, 1.0, 0.0], seed=1, start=0, count=20_000))
    assert many[2] == 0 and abs(many[0] / 20_000 - 0.75) < 0.015
    assert draw_domains([3.0, 1.0], 1, 500, 100) == draw_domains([3.0, 1.0], 1, 0, 600)[500:]  # index, not history


def test_ranks_draw_the_same_domains_and_read_disjoint_clips(sources):
    dirs, _ = sources
    ranks = [DomainMixLoader(spec(dirs, disc=1, cont=1), cfg(), rank=r, world=2) for r in range(2)]
    # 2 of 4 shards x 12 clips per rank: 12 batches of 2 per source epoch; 16 batches stay within the first epochs
    per_rank = [take(loader, 16) for loader in ranks]
    assert [b["domain"] for b in per_rank[0]] == [b["domain"] for b in per_rank[1]]
    seen = [{(b["domain"], k) for b in batches for k in b["key"]} for batches in per_rank]
    assert len(seen[0]) == len(seen[1]) == 32 and not seen[0] & seen[1]
    other_seed = DomainMixLoader(spec(dirs, disc=1, cont=1), cfg(), seed=8)
    assert other_seed.draws(0, 16) != [b["domain"] for b in per_rank[0]] == ranks[0].draws(0, 16)


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
        for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume_continues_the_same_batches(tmp_path, num_workers):
    # small sources (2 batches per epoch with 2 workers) so the resumed stream crosses many source epochs
    dirs = {name: str(tmp_path / name) for name in SPACES}
    for name in SPACES:
        write_source(tmp_path / name, name, shards=2, clips=5)
    c = cfg(num_workers=num_workers)
    first = DomainMixLoader(spec(dirs, disc=2, cont=1, video=1), c)
    it = iter(first)
    for _ in range(7):
        next(it)
    held = next(it)  # fetched ahead, not used yet (as Lightning does)
    first.lookahead = 1
    torch.save(first.state_dict(), tmp_path / "state.pt")
    rest = [held] + [next(it) for _ in range(11)]
    resumed = DomainMixLoader(spec(dirs, disc=2, cont=1, video=1), c)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    again = take(resumed, 12)
    assert same(again, rest)
    assert len({b["domain"] for b in rest}) == 3


def test_resume_from_every_position_of_a_stream(tmp_path):
    for name in ("disc", "cont"):
        write_source(tmp_path / name, name, shards=2, clips=3)  # 3 batches per source epoch: ends everywhere
    s = [str(tmp_path / "disc"), str(tmp_path / "cont")]
    loader = DomainMixLoader(s, cfg())
    states, batches = [], []
    it = iter(loader)
    for _ in range(16):
        states.append(loader.state_dict())
        batches.append(next(it))
    for n in range(12):
        resumed = DomainMixLoader(s, cfg())
        resumed.load_state_dict(states[n])
        assert same(take(resumed, 4), batches[n:n + 4]), n


def test_one_source_streams_as_its_clip_loader_across_epochs(sources):
    dirs, _ = sources
    plain = ClipLoader(dirs["cont"], cfg())
    epochs = [b for _ in range(2) for b in plain]
    mixed = take(DomainMixLoader([dirs["cont"]], cfg()), len(epochs))
    assert all(b.pop("domain") == "cont" for b in mixed)
    assert same(mixed, epochs)


def test_epoch_batches_cut_the_stream_into_passes(sources):
    dirs, _ = sources
    loader = DomainMixLoader(spec(dirs, disc=1, cont=1), cfg(), epoch_batches=5)
    a, b = list(loader), list(loader)
    assert len(a) == len(b) == 5 and loader.batches == 10
    assert same(a + b, take(DomainMixLoader(spec(dirs, disc=1, cont=1), cfg()), 10))


def test_train_side_and_heldout_loaders_keep_the_split(sources):
    dirs, _ = sources
    held = mixture.heldout_loaders(spec(dirs, disc=1, video=1), cfg())
    assert list(held) == ["disc", "video"]
    held_eps = {k.split("_")[0] for b in held["disc"] for k in b["key"]}
    assert held_eps == {"ep0003"}  # the last of 4 episodes (one per shard)
    train = DomainMixLoader(spec(dirs, disc=1, video=1), cfg(), side="train")
    assert len(train.splits) == 2
    train_eps = {k.split("_")[0] for b in take(train, 20) for k in b["key"]}
    assert train_eps and not train_eps & held_eps


def test_mixed_clip_lengths_are_cut_to_the_shortest(tmp_path):
    write_source(tmp_path / "disc", "disc", t=6)
    write_source(tmp_path / "cont", "cont", t=4)
    loader = DomainMixLoader([str(tmp_path / "disc"), str(tmp_path / "cont")], cfg())
    for b in take(loader, 10):
        assert b["frames"].shape[1] == 4 and b["actions"].shape[1] == 4 and b["rewards"].shape[1] == 4


def test_token_sources_of_one_tokenizer_mix(tmp_path):
    write_token_dataset(tmp_path / "a", t=6)
    write_token_dataset(tmp_path / "b", t=4, seed=1)
    loader = DomainMixLoader([str(tmp_path / "a"), str(tmp_path / "b")], cfg())
    batches = take(loader, 8)
    assert {b["domain"] for b in batches} == {"a", "b"}
    assert all(b["tokens"].shape == (2, 4, 4, 4) and b["tokens"].dtype == torch.int64 for b in batches)


def test_spec_from_yaml_and_config_field(tmp_path, sources):
    dirs, _ = sources
    (tmp_path / "mix.yaml").write_text(f"sources:\n  - {{path: {dirs['disc']}, weight: 2}}\n"
                                       f"  - {{path: {dirs['video']}, domain: clips}}\n")
    s = MixtureSpec.from_yaml(tmp_path / "mix.yaml")
    assert s.names == ["disc", "clips"] and s.sources[0].weight == 2

    @dataclasses.dataclass
    class DataSection:  # how a training config can hold a mixture: a list of sources, overridable from YAML
        mixture: list[MixtureSource] = dataclasses.field(default_factory=list)

    section = apply(DataSection(), {"mixture": [{"path": dirs["disc"], "weight": 2}]})
    assert MixtureSpec.from_config(section.mixture).sources[0] == MixtureSource(dirs["disc"], 2.0)


def bad_spec(tmp_path: Path, dirs: dict, case: str) -> list:
    if case == "missing dataset.json":
        (tmp_path / "empty").mkdir()
        return [dirs["disc"], str(tmp_path / "empty")]
    if case == "negative weight":
        return [{"path": dirs["disc"], "weight": -1}]
    if case == "all weights 0":
        return spec(dirs, disc=0, cont=0)
    if case == "duplicate domain":
        return [{"path": dirs["disc"]}, {"path": dirs["cont"], "domain": "disc"}]
    if case == "bad domain name":
        return [{"path": dirs["disc"], "domain": "a.b"}]
    if case == "unknown field":
        return [{"path": dirs["disc"], "wieght": 2}]
    if case == "other resolution":
        write_source(tmp_path / "big", "disc", size=16)
        return [dirs["disc"], str(tmp_path / "big")]
    if case == "frames and tokens":
        write_source(tmp_path / "small", "disc", size=4)
        write_token_dataset(tmp_path / "tok", grid=4)
        return [str(tmp_path / "small"), str(tmp_path / "tok")]
    if case == "other tokenizer":
        write_token_dataset(tmp_path / "tok", grid=4)
        write_token_dataset(tmp_path / "tok2", grid=4, vocab=32)
        return [str(tmp_path / "tok"), str(tmp_path / "tok2")]
    raise AssertionError(case)


@pytest.mark.parametrize("case, words", [
    ("missing dataset.json", ["source 1", "field 'path'", "dataset.json"]),
    ("negative weight", ["source 0", "field 'weight'", "-1"]),
    ("all weights 0", ["field 'weight'", "all 2 sources have weight 0"]),
    ("duplicate domain", ["source 1", "field 'domain'", "also the domain of source 0"]),
    ("bad domain name", ["source 0", "field 'domain'", "'a.b'"]),
    ("unknown field", ["source 0", "unknown field 'wieght'"]),
    ("other resolution", ["source 1", "field 'resolution'", "[16, 16]", "[8, 8]"]),
    ("frames and tokens", ["source 1", "field 'frame_storage'", "'tokens'", "'frames'"]),
    ("other tokenizer", ["source 1", "field 'tokens.vocab_size'", "32"]),
])
def test_bad_specs_name_the_source_and_field(tmp_path, sources, case, words):
    dirs, _ = sources
    with pytest.raises(MixtureError) as e:
        DomainMixLoader(bad_spec(tmp_path, dirs, case), cfg())
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_source_too_small_for_its_ranks_is_named(tmp_path):
    write_source(tmp_path / "tiny", "disc", shards=1, clips=1)
    loader = DomainMixLoader([str(tmp_path / "tiny")], cfg())
    with pytest.raises(MixtureError, match=r"source 0 .*no batch of 2 clips.*resampled"):
        take(loader, 1)


def test_resume_refuses_other_sources(sources):
    dirs, _ = sources
    state = DomainMixLoader(spec(dirs, disc=1, cont=1), cfg()).state_dict()
    with pytest.raises(ValueError, match="domains"):
        DomainMixLoader(spec(dirs, cont=1, disc=1), cfg()).load_state_dict(state)
