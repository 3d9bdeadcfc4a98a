"""Planning and policy learning in imagination: CEM, MCTS and the actor-critic on hand-made models whose best actions
are known, the same code through tiny random world models, and ``wm-video plan`` / ``imagine-train`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_decoder import make_tokenizer

from wm_video.cli import main
from wm_video.data.schema import ActionSpace
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.planning import (
    ActorCritic,
    ActorCriticConfig,
    CEMConfig,
    CEMPlanner,
    ImaginationTrainer,
    ImagineConfig,
    MCTSConfig,
    MCTSPlanner,
    StartStates,
    check_outcome_heads,
    lambda_returns,
    model_action_space,
    score_plans,
)
from wm_video.utils.video_io import read_video
from wm_video.world_model import WorldModel, WorldModelInfo
from wm_video.world_model_env import EnvStep, WorldModelEnv

CONTEXT = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)  # what the hand-made envs ignore


# ---- hand-made imagined environments whose best actions are known ------------------------------------------------


class TargetEnv:
    """Continuous: reward ``-(a - target)^2`` summed over dimensions, every step; never terminates. Counts resets
    and the batch sizes it sees."""

    def __init__(self, target=(0.7, -0.3)):
        self.target = torch.tensor(target)
        self.resets, self.steps = [], 0

    def reset(self, frames, actions=None):
        self.resets.append(frames.shape[0])
        return torch.zeros(frames.shape[0], frames.shape[1], 1, 1, dtype=torch.long)

    def step(self, actions):
        self.steps += 1
        b = actions.shape[0]
        reward = -((actions - self.target) ** 2).sum(-1)
        return EnvStep(torch.zeros(b, 1, 1, dtype=torch.long), None, reward, torch.zeros(b))


class TrapEnv:
    """Discrete, 3 actions, states 0 start / 1 trap / 2 good / 3 dead (the state is the one token). From the start:
    action 0 pays 0.5 and leads to the trap (0 forever); action 1 pays 0 and leads to the good state (1 per step
    forever); action 2 pays 2 but terminates, and the dead state keeps paying 1 (as a world model may hallucinate
    after the end), which only survival weighting ignores. Best first action: 1; greedy: 2."""

    def __init__(self):
        self.state = None

    def reset(self, frames, actions=None):
        self.state = torch.zeros(frames.shape[0], dtype=torch.long)
        return self.state.view(-1, 1, 1, 1).expand(-1, frames.shape[1], 1, 1)

    def step(self, actions):
        s = self.state
        start = s == 0
        reward = torch.where(start, torch.tensor([0.5, 0.0, 2.0])[actions], (s >= 2).float())
        term = (start & (actions == 2)) | (s == 3)
        self.state = torch.where(start, torch.tensor([1, 2, 3])[actions], s)
        return EnvStep(self.state.view(-1, 1, 1), None, reward, term.float())


class ParityEnv:
    """Discrete, 2 actions; the state (both tokens of a 1x2 grid) is a random id in [0, 4); reward 1 when the action
    equals the state's parity; the next state is random. A policy must read the tokens to beat 0.5 per step."""

    def __init__(self, seed=0):
        self.g = torch.Generator().manual_seed(seed)

    def _new(self, b):
        self.state = torch.randint(4, (b,), generator=self.g)
        return self.state.view(-1, 1, 1).expand(-1, 1, 2)

    def reset(self, frames, actions=None):
        return self._new(frames.shape[0])[:, None].expand(-1, frames.shape[1], 1, 2)

    def step(self, actions):
        reward = (actions == self.state % 2).float()
        return EnvStep(self._new(len(actions)).clone(), None, reward, torch.zeros(len(actions)))


class GambleEnv:
    """Discrete, 2 actions: action 0 pays 1 every time; action 1 pays 1.2 on average but with noise of std 1.5, as
    sampled rollouts of an unsure world model would disagree."""

    def __init__(self, seed=0):
        self.g = torch.Generator().manual_seed(seed)

    def reset(self, frames, actions=None):
        return torch.zeros(frames.shape[0], frames.shape[1], 1, 1, dtype=torch.long)

    def step(self, actions):
        noise = 1.5 * torch.randn(len(actions), generator=self.g)
        reward = torch.where(actions == 1, 1.2 + noise, torch.ones(len(actions)))
        return EnvStep(torch.zeros(len(actions), 1, 1, dtype=torch.long), None, reward, torch.zeros(len(actions)))


BOX = ActionSpace("continuous", dim=2, low=[-1.0, -1.0], high=[1.0, 1.0])


# ---- tiny random world models -------------------------------------------------------------------------------------


def tiny_world_model(kind: str = "continuous", trained_heads: bool = True, **dyn) -> WorldModel:
    tok = make_tokenizer()
    torch.manual_seed(0)
    acts = {"continuous": dict(action_type="continuous", action_dim=1), "discrete": dict(num_actions=2)}[kind]
    cfg = DynamicsConfig(**{**dict(vocab_size=32, token_h=8, token_w=8, context_frames=4, width=32, depth=1, heads=2,
                                   cond_dim=16, reward_bins=17), **acts, **dyn})
    model = DynamicsModel(cfg)
    if trained_heads:  # stands in for training on rewards: the reward layer leaves its zero initialisation
        torch.nn.init.normal_(model.outcome.reward.weight, std=0.5)
    # ... and on actions: the action encoder's last layer starts at zero (every action equals the null action)
    enc = model.actions
    if getattr(enc, "embed", None) is not None or getattr(enc, "mlp", None) is not None:
        torch.nn.init.normal_(enc.embed.weight if getattr(enc, "embed", None) is not None else enc.mlp[-1].weight,
                              std=0.5)
    space = {"continuous": {"kind": "continuous", "dim": 1, "low": [-2.0], "high": [2.0]},
             "discrete": {"kind": "discrete", "n": 2}}[kind]
    info = WorldModelInfo(resolution=32, fps=10.0, action_space=space,
                          stats={"rewards": {"count": 100, "mean": [0.0]}, "terminations": 0})
    return WorldModel(tok, model, None, info)


def real_context(t: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (t, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    tiny_world_model("continuous").save_pretrained(root / "pendulum")
    tiny_world_model("discrete").save_pretrained(root / "cartpole")
    return root


# ---- (1) planners find the known best action ----------------------------------------------------------------------


@pytest.mark.parametrize("mppi", [False, True])
def test_cem_finds_the_known_best_action_with_one_batched_reset_per_iteration(mppi):
    env = TargetEnv()
    cfg = CEMConfig(horizon=3, population=64, elites=8, iterations=6, mppi=mppi, init_std=1.0)
    planner = CEMPlanner(env, BOX, cfg, generator=torch.Generator().manual_seed(0))
    plan = planner.plan(CONTEXT, torch.zeros(1, 2))
    assert torch.allclose(plan.action, torch.tensor([0.7, -0.3]), atol=0.08)
    assert plan.actions.shape == (3, 2) and (plan.actions.abs() <= 1).all()
    # the whole population in one KV-cached reset per iteration, then horizon steps
    assert env.resets == [64] * 6 and env.steps == 6 * 3
    assert planner.imagined_frames == 6 * 64 * 3
    # the warm start begins the next search at the previous mean: one narrow iteration stays there, while a cold
    # start with the same settings stays near the middle of the bounds
    planner.config.iterations, planner.config.init_std = 1, 0.05
    assert torch.allclose(planner.plan(CONTEXT, torch.zeros(1, 2)).action, plan.action, atol=0.1)
    planner.reset()
    assert planner.plan(CONTEXT, torch.zeros(1, 2)).action.abs().max() < 0.2


def test_cem_respects_bounds_when_the_optimum_lies_outside():
    env = TargetEnv(target=(3.0, -3.0))
    plan = CEMPlanner(env, BOX, CEMConfig(horizon=2, population=64, elites=8, iterations=8),
                      generator=torch.Generator().manual_seed(1)).plan(CONTEXT)
    assert torch.allclose(plan.action, torch.tensor([1.0, -1.0]), atol=0.05) and (plan.actions.abs() <= 1).all()


def test_mcts_finds_the_best_action_that_greedy_misses_and_weights_out_terminated_futures():
    planner = MCTSPlanner(TrapEnv(), ActionSpace("discrete", n=3),
                          MCTSConfig(simulations=96, parallel=8, max_depth=4, rollout_depth=3),
                          generator=torch.Generator().manual_seed(0))
    plan = planner.plan(CONTEXT)
    assert int(plan.action) == 1 and plan.actions[0] == 1
    visits, q = plan.info["visits"], plan.info["q"]
    assert sum(visits) == 96 and visits[1] == max(visits)
    assert q[1] > 0.99 + 0.99**2 + 0.99**3 - 0.01  # 0 now, then 1 per step (deeper leaves see more steps)
    assert q[0] == pytest.approx(0.5, abs=1e-6)
    assert q[2] == pytest.approx(2.0, abs=1e-6)  # its reward, and nothing after the termination
    # scoring agrees: survival weighting makes "terminate for 2" worse than "wait, then 1 per step"
    plans = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]])
    scores = score_plans(TrapEnv(), CONTEXT, None, plans, discount=1.0)
    assert scores.score.tolist() == [0.5, 3.0, 2.0]


def test_uncertainty_penalty_prefers_the_sure_action_over_the_gamble():
    plans = torch.tensor([[0], [1]])
    plain = score_plans(GambleEnv(), CONTEXT, None, plans, samples=64)
    careful = score_plans(GambleEnv(), CONTEXT, None, plans, samples=64, uncertainty=1.0)
    assert plain.score.argmax() == 1 and careful.score.argmax() == 0
    assert plain.std[0] == 0 and plain.std[1] > 1 and plain.returns.shape == (2, 64)

    def choose(uncertainty):
        cfg = MCTSConfig(simulations=8, parallel=2, max_depth=1, rollout_depth=0, samples=32, uncertainty=uncertainty)
        return int(MCTSPlanner(GambleEnv(), ActionSpace("discrete", n=2), cfg).plan(CONTEXT).action)

    assert choose(0.0) == 1 and choose(1.0) == 0


# ---- (2) MCTS visit counts move to the best action ----------------------------------------------------------------


def test_mcts_visit_share_of_the_best_action_grows_with_simulations():
    shares = []
    for sims in (3, 12, 48, 192):
        planner = MCTSPlanner(TrapEnv(), ActionSpace("discrete", n=3),
                              MCTSConfig(simulations=sims, parallel=3, max_depth=4, rollout_depth=3),
                              generator=torch.Generator().manual_seed(0))
        visits = planner.plan(CONTEXT).info["visits"]
        shares.append(visits[1] / sum(visits))
    assert shares == sorted(shares) and shares[0] <= 0.5 and shares[-1] > 0.9


# ---- (3) the actor-critic learns in imagination --------------------------------------------------------------------


def test_lambda_returns_match_the_recursion_by_hand():
    r = torch.tensor([[1.0, 2.0]])
    cont = torch.tensor([[0.5, 0.5]])
    v = torch.tensor([[0.0, 4.0, 8.0]])
    # R_1 = 2 + 0.5 * 8 = 6; R_0 = 1 + 0.5 * (0.5 * 4 + 0.5 * 6) = 3.5
    assert lambda_returns(r, cont, v, 0.5).tolist() == [[3.5, 6.0]]


def test_actor_critic_loss_falls_and_imagined_return_rises_on_a_toy_problem():
    torch.manual_seed(0)
    cfg = ActorCriticConfig(vocab_size=4, embed_dim=8, token_h=1, token_w=2, frames=1, feature_dim=4, hidden=64,
                            num_actions=2)
    agent = ActorCritic(cfg)
    agent.set_embedding(torch.randn(4, 8))
    starts = StartStates(torch.zeros(8, 1, 3, 8, 8, dtype=torch.uint8))
    trainer = ImaginationTrainer(ParityEnv(), agent, starts,
                                 ImagineConfig(horizon=5, batch_size=64, actor_lr=3e-3, critic_lr=3e-3, entropy=1e-3),
                                 generator=torch.Generator().manual_seed(0))
    logs = [trainer.train_step() for _ in range(150)]
    first, last = logs[:10], logs[-10:]
    ret = [np.mean([x["imagined_return"] for x in part]) for part in (first, last)]
    critic = [np.mean([x["critic_loss"] for x in part]) for part in (first, last)]
    optimum = sum(0.99**t for t in range(5))
    assert ret[0] < 0.65 * optimum and ret[1] > 0.9 * optimum
    assert critic[1] < 0.3 * critic[0]
    assert trainer.imagined_frames == 150 * 64 * 5


def test_start_states_come_from_dataset_clips(tmp_path):
    from conftest import write_dataset

    from wm_video.planning.starts import start_states_from_data

    clips = write_dataset(tmp_path / "ds", shards=1, clips_per_shard=2, t=5, kind="continuous", size=32)
    starts = start_states_from_data(tmp_path / "ds", count=3, context_frames=2, resolution=32)
    assert starts.frames.shape == (3, 2, 3, 32, 32) and starts.actions.shape == (3, 1, 3)
    assert torch.equal(starts.frames[1].permute(0, 2, 3, 1), torch.from_numpy(clips[0].frames[2:4]))
    assert torch.equal(starts.actions[2], torch.from_numpy(clips[1].actions[:1]))
    with pytest.raises(ValueError, match="frames are 32x32, the model needs 64x64"):
        start_states_from_data(tmp_path / "ds", count=3, context_frames=2, resolution=64)


# ---- the same code through tiny random world models ---------------------------------------------------------------


def test_scoring_through_a_world_model_env_is_batched_deterministic_and_row_independent():
    wm = tiny_world_model("continuous")
    env = WorldModelEnv(wm, maskgit_steps=1, temperature=0.0, render=False)
    ctx, ctx_acts = real_context(), torch.tensor([[0.5]])
    plans = torch.linspace(-2, 2, 5).view(5, 1, 1).expand(5, 3, 1).contiguous()  # (p, H, a)
    batched = score_plans(env, ctx, ctx_acts, plans)
    alone = torch.cat([score_plans(env, ctx, ctx_acts, p[None]).score for p in plans])
    assert batched.score.shape == (5,) and batched.frames == 15
    assert torch.allclose(batched.score, alone, atol=1e-5)
    assert batched.score.std() > 1e-3  # the (random) reward head does depend on the action

    def decide(seed):
        env = WorldModelEnv(wm, maskgit_steps=1, temperature=1.0, render=False,
                            generator=torch.Generator().manual_seed(seed))
        planner = CEMPlanner(env, model_action_space(wm), CEMConfig(horizon=2, population=6, elites=2, iterations=2,
                                                                    samples=2, uncertainty=0.5),
                             generator=torch.Generator().manual_seed(seed))
        return planner.plan(ctx, ctx_acts)

    a, b = decide(0), decide(0)
    assert a.actions.shape == (2, 1) and -2 <= float(a.action) <= 2
    assert torch.equal(a.actions, b.actions) and a.score == b.score

    dwm = tiny_world_model("discrete")
    denv = WorldModelEnv(dwm, maskgit_steps=1, temperature=0.0, render=False)
    mcts = MCTSPlanner(denv, model_action_space(dwm), MCTSConfig(simulations=6, parallel=3, max_depth=2,
                                                                 rollout_depth=1),
                       generator=torch.Generator().manual_seed(0))
    plan = mcts.plan(real_context(t=3), torch.tensor([0, 1]))
    assert sum(plan.info["visits"]) == 6 and int(plan.action) in (0, 1)
    assert plan.actions.ndim == 1 and 1 <= len(plan.actions) <= 2
    # 2 rounds of 3 leaves: round 1 all at depth 1, + 1 rollout step each; round 2 at depth <= 2
    assert 3 * 2 + 3 * 2 <= mcts.imagined_frames <= 3 * 2 + 3 * 3
    # an actor-critic (untrained here) as leaf value and prior, reading two frames
    ac = ActorCritic.for_world_model(dwm, model_action_space(dwm), frames=2)
    guided = MCTSPlanner(denv, model_action_space(dwm), MCTSConfig(simulations=4, parallel=2, max_depth=2,
                                                                   rollout_depth=0),
                         value_fn=ac.value, prior_fn=ac.policy_logits, value_frames=2)
    plan = guided.plan(real_context(t=3), torch.tensor([0, 1]))
    assert sum(plan.info["visits"]) == 4 and guided.root.prior == pytest.approx([0.5, 0.5])


# ---- (4) bad input --------------------------------------------------------------------------------------------------


def test_planners_refuse_action_spaces_they_do_not_fit():
    with pytest.raises(ValueError, match=r"mcts: searches discrete actions.*continuous.*use the cem planner"):
        MCTSPlanner(TargetEnv(), BOX)
    with pytest.raises(ValueError, match=r"cem: searches continuous actions.*discrete.*use the mcts planner"):
        CEMPlanner(TrapEnv(), ActionSpace("discrete", n=3))
    with pytest.raises(ValueError, match="cem: needs action bounds"):
        CEMPlanner(TargetEnv(), ActionSpace("continuous", dim=2))
    unbounded = tiny_world_model("continuous")
    unbounded.info.action_space = {"kind": "continuous", "dim": 1}
    with pytest.raises(ValueError, match=r"cem: needs action bounds.*--action-low"):
        CEMPlanner(TargetEnv(), model_action_space(unbounded))
    assert model_action_space(unbounded, [-1.0], [1.0]).high == [1.0]
    with pytest.raises(ValueError, match=r"'low' \[1.0\] exceeds 'high' \[-1.0\]"):
        model_action_space(unbounded, [1.0], [-1.0])
    env = WorldModelEnv(unbounded, temperature=0.0, render=False)
    with pytest.raises(ValueError, match="need a sampling temperature > 0"):
        CEMPlanner(env, BOX, CEMConfig(samples=4))
    with pytest.raises(ValueError, match="needs samples >= 2"):
        CEMPlanner(TargetEnv(), BOX, CEMConfig(uncertainty=1.0))
    with pytest.raises(ValueError, match=r"elites \(8\) cannot exceed population"):
        CEMConfig(population=4, elites=8)


def test_planning_refuses_models_without_trained_reward_and_termination_heads():
    check_outcome_heads(tiny_world_model())
    with pytest.raises(ValueError, match="reward head is untrained"):
        check_outcome_heads(tiny_world_model(trained_heads=False))
    no_rewards = tiny_world_model()
    no_rewards.info.stats = {"rewards": {"count": 0}, "terminations": 0}
    with pytest.raises(ValueError, match="training data had no rewards or terminations"):
        check_outcome_heads(no_rewards)
    with pytest.raises(ValueError, match="video-only"):
        check_outcome_heads(tiny_world_model(action_type="none"))


# ---- (5) the commands end to end against real simulators -----------------------------------------------------------


def test_plan_cli_controls_pendulum_with_cem_and_writes_report_and_video(saved_models, tmp_path):
    pytest.importorskip("gymnasium")
    out = tmp_path / "cem"
    assert main(["plan", "--model", str(saved_models / "pendulum"), "--env", "Pendulum-v1", "--planner", "cem",
                 "--episodes", "1", "--max-steps", "3", "--horizon", "2", "--population", "4", "--elites", "2",
                 "--iterations", "1", "--maskgit-steps", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    cem, rnd = report["results"]["cem"], report["results"]["random"]
    assert len(cem["returns"]) == 1 and cem["lengths"] == [3] and cem["decisions"] == 3
    assert cem["imagined_frames"] == 3 * 4 * 2 and cem["decisions_per_s"] > 0 and cem["imagined_frames_per_s"] > 0
    assert "margin_stderrs" in cem and len(rnd["returns"]) == 1
    assert report["settings"]["population"] == 4 and report["compute"]["wall_seconds"] > 0
    assert "| cem | 1 |" in (out / "report.md").read_text()
    video = read_video(out / "cem_episode000.mp4")
    assert video.shape[0] == 3 and video.shape[2] >= 3 * 64  # real | imagined next | imagined end, 2x upscaled
    assert (out / "random_episode000.mp4").exists()


def test_plan_cli_runs_mcts_on_cartpole_and_refuses_mismatches(saved_models, tmp_path, capsys):
    pytest.importorskip("gymnasium")
    model = str(saved_models / "cartpole")
    out = tmp_path / "mcts"
    assert main(["plan", "--model", model, "--env", "CartPole-v1", "--planner", "mcts", "--episodes", "1",
                 "--max-steps", "2", "--horizon", "2", "--simulations", "4", "--parallel", "2", "--rollout-depth",
                 "1", "--maskgit-steps", "1", "--no-baseline", "--video-episodes", "0", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"mcts"} and report["results"]["mcts"]["decisions"] == 2
    capsys.readouterr()
    assert main(["plan", "--model", model, "--env", "CartPole-v1", "--planner", "cem", "--out", str(out)]) == 2
    assert "cem: searches continuous actions" in capsys.readouterr().err
    assert main(["plan", "--model", model, "--env", "Pendulum-v1", "--out", str(out)]) == 2
    assert "takes continuous actions, the world model discrete ones" in capsys.readouterr().err


def test_imagine_train_cli_trains_saves_and_evaluates_the_actor(saved_models, tmp_path):
    pytest.importorskip("gymnasium")
    out = tmp_path / "imagine"
    assert main(["imagine-train", "--model", str(saved_models / "pendulum"), "--env", "Pendulum-v1", "--iterations",
                 "3", "--batch-size", "2", "--horizon", "2", "--start-states", "4", "--maskgit-steps", "1",
                 "--episodes", "1", "--max-steps", "2", "--log-every", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["training"]["history"]) == 3 and report["training"]["imagined_frames"] == 3 * 2 * 2
    assert report["results"]["actor"]["lengths"] == [2] and "random" in report["results"]
    actor = ActorCritic.from_pretrained(out / "actor")
    assert actor.config.action_type == "continuous" and actor.config.action_high == [2.0]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ActorCritic.from_pretrained(tmp_path / "no_actor")
    tokens = torch.zeros(1, 2, 8, 8, dtype=torch.long)
    assert -2 <= float(actor.sample(tokens, deterministic=True)[0]) <= 2
    # the trained critic values the ends of CEM's plans
    assert main(["plan", "--model", str(saved_models / "pendulum"), "--env", "Pendulum-v1", "--episodes", "1",
                 "--max-steps", "1", "--horizon", "2", "--population", "4", "--elites", "2", "--iterations", "1",
                 "--maskgit-steps", "1", "--no-baseline", "--video-episodes", "0", "--value", str(out / "actor"),
                 "--out", str(tmp_path / "valued")]) == 0


def test_planning_returns_stages_call_the_planning_library_with_the_verbs_settings(saved_models, tmp_path, capsys):
    """eval/planning/planning_returns.py runs its stages through planning.runner (not the CLI), with settings that
    are fields of the plan config."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("gymnasium")
    script = Path(__file__).parent.parent / "eval" / "planning" / "planning_returns.py"
    spec = importlib.util.spec_from_file_location("planning_returns", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = {**module.agent_settings(smoke=True)["cem"], "episodes": 1, "max_steps": 2, "horizon": 2,
                "population": 4, "elites": 2, "iterations": 1, "video_episodes": 0}
    report = module.run_stage("cem", saved_models / "pendulum", tmp_path, settings, "Pendulum-v1")
    assert report["kind"] == "plan" and set(report["results"]) == {"cem", "random"}
    assert report["settings"]["population"] == 4 and (tmp_path / "cem" / "report.json").exists()
    assert "| cem | 1 |" in capsys.readouterr().out
