"""Table 1, "LLMs for robotics reward design" (EUREKA): the LLM writes a reward function.

The candidate is Python code defining ``compute_reward(obs, action, next_obs, terminated)``
for gymnasium's ``CartPole-v1``. ``score`` trains a linear threshold policy with that reward
inside the sandbox and returns the *true* task success of the trained policy (mean episode
length / 500 on held-out episodes) plus EUREKA-style "reward reflection" feedback.

Training, as in EUREKA's fixed-length rollouts, runs episodes of a fixed number of steps with
automatic resets, so the reward alone decides what is learned: a constant reward gives no
signal (every policy scores the same) and a wrong-sign reward teaches falling over. The learner
is seeded hill climbing over linear policies (random global proposals, then shrinking local
perturbations, a proposal kept only if it strictly improves the candidate's return); given
the record's seed everything is deterministic.

This file is also the sandbox harness: ``run(candidate, args)`` is what the sandboxed child
calls, so the module imports only numpy and gymnasium at the top.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Callable

import gymnasium
import numpy as np

ENV_ID = "CartPole-v1"
MAX_STEPS = 500
GLOBAL_PROPOSALS = 32
LOCAL_PROPOSALS = 32
TRAIN_EPISODES = 2
TEST_EPISODES = 8
SANDBOX_TIMEOUT_S = 30.0
_OBS_SCALE = np.array([1 / 2.4, 1 / 2.0, 1 / 0.2095, 1 / 2.0])
_TEST_SEED_BASE = 10**7

REFERENCE_REWARD = '''\
def compute_reward(obs, action, next_obs, terminated):
    """Stay alive, keep the pole upright and the cart near the centre."""
    x, x_dot, theta, theta_dot = next_obs
    if terminated:
        return -10.0
    return 1.0 - (theta / 0.2095) ** 2 - 0.1 * (x / 2.4) ** 2
'''

RewardFn = Callable[[np.ndarray, int, np.ndarray, bool], float]


def act(theta: np.ndarray, obs: np.ndarray) -> int:
    """The linear threshold policy: push right (1) when the scaled features say so."""
    return 1 if float(np.dot(theta[:4], obs * _OBS_SCALE)) + 0.1 * theta[4] > 0 else 0


def _reward(fn: RewardFn, obs: np.ndarray, action: int, next_obs: np.ndarray,
            terminated: bool) -> float:
    value = fn(obs.copy(), action, next_obs.copy(), terminated)
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"compute_reward must return a finite number, got {value!r} "
                         f"(obs={[round(float(v), 3) for v in obs]}, action={action}, "
                         f"terminated={terminated})")
    return float(value)


def _training_return(env: gymnasium.Env, theta: np.ndarray, fn: RewardFn, seed: int) -> float:
    """The candidate reward summed over MAX_STEPS steps, resetting whenever the pole falls."""
    obs, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(MAX_STEPS):
        action = act(theta, obs)
        next_obs, _, terminated, _, _ = env.step(action)
        total += _reward(fn, obs, action, next_obs, bool(terminated))
        obs = env.reset()[0] if terminated else next_obs
    return total


def train(fn: RewardFn, seed: int) -> tuple[np.ndarray, dict]:
    """Seeded hill climbing over linear policies on the candidate's reward."""
    rng = np.random.default_rng(seed)
    env = gymnasium.make(ENV_ID).unwrapped
    episode_seeds = [int(s) for s in rng.integers(0, _TEST_SEED_BASE, TRAIN_EPISODES)]

    def objective(theta: np.ndarray) -> float:
        return sum(_training_return(env, theta, fn, s) for s in episode_seeds)

    best = np.zeros(5)
    best_value = initial_value = objective(best)
    improvements = 0
    for i in range(GLOBAL_PROPOSALS + LOCAL_PROPOSALS):
        if i < GLOBAL_PROPOSALS:
            proposal = rng.standard_normal(5)
        else:
            scale = 0.05 + 0.3 * (1 - (i - GLOBAL_PROPOSALS) / LOCAL_PROPOSALS)
            proposal = best + scale * np.linalg.norm(best) * rng.standard_normal(5)
        value = objective(proposal)
        if value > best_value:
            best, best_value, improvements = proposal, value, improvements + 1
    stats = {"initial_return": initial_value / TRAIN_EPISODES,
             "final_return": best_value / TRAIN_EPISODES, "improvements": improvements,
             "proposals": GLOBAL_PROPOSALS + LOCAL_PROPOSALS}
    return best, stats


def test(theta: np.ndarray, fn: RewardFn, seed: int) -> dict:
    """Run the policy on held-out episodes: true success and the candidate's reward statistics."""
    env = gymnasium.make(ENV_ID).unwrapped
    lengths: list[int] = []
    rewards: list[float] = []
    final_rewards: list[float] = []
    for episode in range(TEST_EPISODES):
        obs, _ = env.reset(seed=_TEST_SEED_BASE + 1000 * seed + episode)
        for step in range(1, MAX_STEPS + 1):
            action = act(theta, obs)
            next_obs, _, terminated, _, _ = env.step(action)
            rewards.append(_reward(fn, obs, action, next_obs, bool(terminated)))
            obs = next_obs
            if terminated:
                final_rewards.append(rewards[-1])
                break
        lengths.append(step)
    return {"success": float(np.mean(lengths)) / MAX_STEPS, "lengths": lengths,
            "reward_mean": float(np.mean(rewards)), "reward_min": float(np.min(rewards)),
            "reward_max": float(np.max(rewards)),
            "final_reward_mean": float(np.mean(final_rewards)) if final_rewards else None}


def run(candidate: object, args: dict) -> dict:
    """Sandbox harness entry point: train with the candidate's reward and test the policy."""
    fn = getattr(candidate, "compute_reward", None)
    if not callable(fn):
        raise NameError("the code defines no function compute_reward(obs, action, next_obs, "
                        "terminated)")
    seed = int(args.get("seed", 0))
    theta, stats = train(fn, seed)
    return {**stats, **test(theta, fn, seed), "policy": theta.round(4).tolist()}


def feedback(result: dict) -> str:
    """EUREKA-style reward reflection for the next round's prompt."""
    lines = [
        f"We trained a policy with your reward function (hill climbing over "
        f"{result['proposals']} linear policies, {TRAIN_EPISODES} training runs of {MAX_STEPS} "
        f"steps) and tested it on {TEST_EPISODES} new episodes.",
        f"Task success (mean episode length / {MAX_STEPS}): {result['success']:.3f}",
        f"Episode lengths: {result['lengths']}",
        f"Mean true return (steps balanced): {result['success'] * MAX_STEPS:.1f}",
        f"Your reward per step while testing: mean {result['reward_mean']:.3f}, "
        f"min {result['reward_min']:.3f}, max {result['reward_max']:.3f}"
        + ("" if result["final_reward_mean"] is None else
           f"; on the step where the pole fell: mean {result['final_reward_mean']:.3f}"),
        f"Training return under your reward: {result['initial_return']:.2f} for the initial "
        f"policy -> {result['final_return']:.2f} after {result['improvements']} improvements.",
    ]
    if result["improvements"] == 0:
        lines.append("No policy scored better than the initial one under your reward, so "
                     "training learned nothing: the reward must depend on the state and prefer "
                     "states where the pole stays upright.")
    lines.append("Please analyse this feedback and write an improved compute_reward.")
    return "\n".join(lines)


def score(x: str, candidate: str, record: dict) -> dict:
    """External reward: true task success of a policy trained with the candidate's reward."""
    from aldsl.isolation.sandbox import extract_python, run_sandboxed  # not at the top: this is the harness

    harness = Path(__file__).read_text(encoding="utf-8")
    result = run_sandboxed(extract_python(candidate, "compute_reward"), harness,
                           timeout=float(record.get("timeout", SANDBOX_TIMEOUT_S)),
                           args={"seed": int(record.get("seed", 0))},
                           preload=("numpy", "gymnasium"))
    if not result.ok:
        return {"score": 0.0,
                "feedback": "Executing your reward function failed:\n" + str(result.error)
                + "\nPlease fix the bug and write compute_reward again."}
    return {"score": float(result.value["success"]), "feedback": feedback(result.value)}
