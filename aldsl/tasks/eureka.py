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

The environment, the learner and the success measure run here, in the trusted process; only
``compute_reward`` runs in the sandbox, called for every transition of a rollout in one round
trip (the reward never changes the trajectory, only what is learned from it). So the
candidate can influence nothing but the rewards it returns.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from aldsl.errors import require_extra
from aldsl.isolation.sandbox import (Candidate, CandidateError, extract_python, finite_number,
                                     run_sandboxed)

gymnasium = require_extra("gymnasium", "eureka", "the Eureka task (CartPole)")

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

Transition = tuple[list[float], int, list[float], bool]
RewardFn = Callable[[Sequence[Transition]], list[float]]


def act(theta: np.ndarray, obs: np.ndarray) -> int:
    """The linear threshold policy: push right (1) when the scaled features say so."""
    return 1 if float(np.dot(theta[:4], obs * _OBS_SCALE)) + 0.1 * theta[4] > 0 else 0


def sandboxed_rewards(candidate: Candidate) -> RewardFn:
    """The candidate's ``compute_reward`` over many transitions, each checked to be finite."""
    if candidate.names.get("compute_reward") != "function":
        raise CandidateError("the code defines no function compute_reward(obs, action, next_obs, "
                             "terminated)")

    def rewards(transitions: Sequence[Transition]) -> list[float]:
        values = candidate.map("compute_reward", transitions, arrays=(0, 2))
        out = []
        for value, (obs, action, _next, terminated) in zip(values, transitions):
            out.append(finite_number(value, f"compute_reward (obs={[round(v, 3) for v in obs]}, "
                                            f"action={action}, terminated={terminated})"))
        return out

    return rewards


def _transition(obs: np.ndarray, action: int, next_obs: np.ndarray, terminated: bool) -> Transition:
    return obs.tolist(), action, next_obs.tolist(), bool(terminated)


def _training_return(env: gymnasium.Env, theta: np.ndarray, rewards: RewardFn, seed: int) -> float:
    """The candidate reward summed over MAX_STEPS steps, resetting whenever the pole falls."""
    obs, _ = env.reset(seed=seed)
    transitions = []
    for _ in range(MAX_STEPS):
        action = act(theta, obs)
        next_obs, _, terminated, _, _ = env.step(action)
        transitions.append(_transition(obs, action, next_obs, terminated))
        obs = env.reset()[0] if terminated else next_obs
    return sum(rewards(transitions))


def train(rewards: RewardFn, seed: int) -> tuple[np.ndarray, dict]:
    """Seeded hill climbing over linear policies on the candidate's reward."""
    rng = np.random.default_rng(seed)
    env = gymnasium.make(ENV_ID).unwrapped
    episode_seeds = [int(s) for s in rng.integers(0, _TEST_SEED_BASE, TRAIN_EPISODES)]

    def objective(theta: np.ndarray) -> float:
        return sum(_training_return(env, theta, rewards, s) for s in episode_seeds)

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


def test(theta: np.ndarray, rewards: RewardFn, seed: int) -> dict:
    """Run the policy on held-out episodes: true success and the candidate's reward statistics."""
    env = gymnasium.make(ENV_ID).unwrapped
    lengths: list[int] = []
    transitions: list[Transition] = []
    for episode in range(TEST_EPISODES):
        obs, _ = env.reset(seed=_TEST_SEED_BASE + 1000 * seed + episode)
        for step in range(1, MAX_STEPS + 1):
            action = act(theta, obs)
            next_obs, _, terminated, _, _ = env.step(action)
            transitions.append(_transition(obs, action, next_obs, terminated))
            obs = next_obs
            if terminated:
                break
        lengths.append(step)
    values = rewards(transitions)
    final_rewards = [v for v, t in zip(values, transitions) if t[3]]
    return {"success": float(np.mean(lengths)) / MAX_STEPS, "lengths": lengths,
            "reward_mean": float(np.mean(values)), "reward_min": float(np.min(values)),
            "reward_max": float(np.max(values)),
            "final_reward_mean": float(np.mean(final_rewards)) if final_rewards else None}


def drive(candidate: Candidate, seed: int) -> dict:
    """Train with the candidate's reward and test the policy (the trusted side of the sandbox)."""
    rewards = sandboxed_rewards(candidate)
    theta, stats = train(rewards, seed)
    return {**stats, **test(theta, rewards, seed), "policy": theta.round(4).tolist()}


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
    seed = int(record.get("seed", 0))
    result = run_sandboxed(extract_python(candidate, "compute_reward"),
                           lambda sandboxed: drive(sandboxed, seed),
                           timeout=float(record.get("timeout", SANDBOX_TIMEOUT_S)))
    if not result.ok:
        return {"score": 0.0,
                "feedback": "Executing your reward function failed:\n" + str(result.error)
                + "\nPlease fix the bug and write compute_reward again."}
    return {"score": float(result.value["success"]), "feedback": feedback(result.value)}
