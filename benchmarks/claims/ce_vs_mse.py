"""Claim (paper, arXiv 2505.23150): a cross-entropy critic keeps per-task TD loss, critic gradient norm and policy
entropy on one scale across tasks with very different reward scales; a regression (MSE) critic does not.

    MUJOCO_GL=disable python benchmarks/claims/ce_vs_mse.py --steps-per-task 3000 --out benchmarks/results/ce_vs_mse.png

Suite: Pendulum-v1 twice, rewards x1 and x100 (``gymnasium.wrappers.TransformReward``): same dynamics, so any
difference between the two tasks' diagnostics comes from the reward scale alone.

The MSE variant is :class:`MSEBRC`, a ``BRCSAC`` subclass that changes nothing but the critic's loss and how a
Q-value is read from it, so that both agents share the architecture (BroNet ensemble of 2 heads, critic-owned
task embeddings), the optimisers, the temperature, the replay ratio and the reward normaliser:

- the critic is built with ``n_atoms=2`` (the smallest the policy accepts) and logit 0 of each head is read as
  a scalar Q (logit 1 is unused and gets no gradient);
- TD target ``r + gamma * mask * (mean_heads Q_target(s', a') - alpha * log pi(a'|s'))``: the *mean* over the
  target heads, as BRC's categorical target uses the mean target distribution (SAC would take the min), so the
  only difference from BRC is regression vs cross-entropy;
- loss ``sum_heads mean_batch (Q - target)^2 / 2`` (SB3 SAC's scaling); actor maximises the mean-head Q.

Both are run with BRC's per-task return normalisation on and off (same setting for both in a pair).
Diagnostics (:func:`sb3_brc.task_diagnostics`, which calls ``model._critic_loss``) every ``--diag-every``
gradient updates after learning starts. Reported per quantity: the max/min ratio across tasks of TD loss and
gradient norm (scale-free), and the across-task standard deviation of the policy entropy (nats; entropies can
be negative, so no ratio), as medians over the diagnostic points.
"""

import argparse
import functools
import time

import gymnasium as gym
import numpy as np
import torch as th
from matplotlib.figure import Figure

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.tools.diagnostics import DiagnosticsCallback
from sb3_brc.tools.evaluation import evaluate_tasks

SCALES = (1.0, 100.0)


class MSEBRC(BRCSAC):
    """BRCSAC with a scalar regression critic (logit 0 of a 2-atom head) trained with MSE; see the module docstring."""

    def _critic_loss(self, replay_data, rewards: th.Tensor, ent_coef: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        with th.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
            next_q = self.critic_target(replay_data.next_observations, next_actions)[..., 0].float().mean(1, keepdim=True)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            masks = 1.0 - replay_data.dones
            target = rewards + discounts * masks * (next_q - ent_coef * next_log_prob.float().unsqueeze(-1))
        logits = self.critic(replay_data.observations, replay_data.actions)
        q_values = logits[..., 0].float()  # (batch, n_critics)
        return 0.5 * ((q_values - target) ** 2).mean(0).sum(), logits

    def _actor_loss(self, observations, ent_coef: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        actions_pi, log_prob = self.actor.action_log_prob(observations)
        q_value = self.critic(observations, actions_pi)[..., 0].float().mean(1)
        return (ent_coef * log_prob - q_value).mean(), log_prob


def scaled_pendulum(scale: float) -> gym.Env:
    return gym.wrappers.TransformReward(gym.make("Pendulum-v1"), lambda r: scale * r)


def make_env(seed: int) -> MultiTaskVecEnv:
    tasks = [functools.partial(scaled_pendulum, s) for s in SCALES]
    return MultiTaskVecEnv(tasks, task_names=[f"pendulum-x{s:g}" for s in SCALES], seed=seed)


def spread(history: list[dict]) -> dict[str, np.ndarray]:
    """Per diagnostic point: max/min across tasks of loss and grad norm, across-task std of entropy."""
    loss = np.array([max(h["critic_loss"]) / min(h["critic_loss"]) for h in history])
    grad = np.array([max(h["grad_norm"]) / min(h["grad_norm"]) for h in history])
    entropy = np.array([np.std(h["entropy"]) for h in history])
    return dict(steps=np.array([h["num_timesteps"] for h in history]) // len(SCALES), loss=loss, grad=grad, entropy=entropy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-per-task", type=int, default=3000)
    parser.add_argument("--learning-starts", type=int, default=500, help="per task")
    parser.add_argument("--diag-every", type=int, default=500, help="gradient updates between diagnostics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--normalize", choices=["on", "off", "both"], default="both")
    parser.add_argument("--out", default="ce_vs_mse.png")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    settings = [True, False] if args.normalize == "both" else [args.normalize == "on"]
    results = {}
    for normalize in settings:
        for name, cls, atoms in (("CE (BRC)", BRCSAC, 101), ("MSE", MSEBRC, 2)):
            start = time.time()
            env = make_env(args.seed)
            model = cls(
                "MlpPolicy",
                env,
                learning_starts=args.learning_starts * len(SCALES),
                batch_size=256,
                normalize_rewards=normalize,
                seed=args.seed,
                policy_kwargs=dict(net_arch=dict(pi=[64], qf=[128, 128]), n_atoms=atoms),
            )
            diagnostics = DiagnosticsCallback(every_n_updates=args.diag_every)
            model.learn(args.steps_per_task * len(SCALES), callback=diagnostics)
            final = evaluate_tasks(model, make_env(args.seed + 42), 5)
            key = f"{name}, reward norm {'on' if normalize else 'off'}"
            results[key] = (spread(diagnostics.history), diagnostics.history[-1], final)
            print(f"{key}: {(time.time() - start) / 60:.1f} min", flush=True)

    fig = Figure(figsize=(14, 3.6))
    axes = fig.subplots(1, 3)
    titles = ("TD loss: max/min across tasks", "critic grad norm: max/min across tasks", "policy entropy: std across tasks")
    for ax, quantity, title in zip(axes, ("loss", "grad", "entropy"), titles, strict=True):
        for key, (curve, _, _) in results.items():
            ax.plot(curve["steps"], curve[quantity], marker=".", label=key, linestyle="-" if "on" in key else "--")
        if quantity != "entropy":
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps per task")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Pendulum-v1 with rewards x{SCALES[0]:g} and x{SCALES[1]:g}, seed {args.seed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot: {args.out}\n")

    print(
        "| critic | TD-loss max/min | grad-norm max/min | entropy std (nats) | final TD loss per task "
        "| final grad norm per task | eval return x1 | eval return x100 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key, (curve, last, final) in results.items():
        losses = ", ".join(f"{v:.3g}" for v in last["critic_loss"])
        norms = ", ".join(f"{v:.3g}" for v in last["grad_norm"])
        print(
            f"| {key} | {np.median(curve['loss']):.3g} | {np.median(curve['grad']):.3g} | {np.median(curve['entropy']):.3g} "
            f"| {losses} | {norms} | {final[0]['mean_return']:.0f} | {final[1]['mean_return']:.0f} |"
        )
    print("\n(ratios and std are medians over the diagnostic points; final = last diagnostic point)")
    for normalize in ("on", "off"):
        ce, mse = (results.get(f"{n}, reward norm {normalize}") for n in ("CE (BRC)", "MSE"))
        if ce is None or mse is None:
            continue
        verdict = [
            f"{label} {'lower' if np.median(ce[0][q]) < np.median(mse[0][q]) else 'NOT lower'} with CE"
            for q, label in (("loss", "TD-loss ratio"), ("grad", "grad-norm ratio"), ("entropy", "entropy spread"))
        ]
        print(f"reward norm {normalize}: " + "; ".join(verdict))


if __name__ == "__main__":
    main()
