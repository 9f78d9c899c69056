"""Differential check: ``BRCSAC.train()`` against the official JAX BRC update (naumix/BiggerRegularizedCategorical),
update for update, from the same parameters, batches, policy noise and return-normaliser statistics.

    python benchmarks/vs_reference_updates.py --reference REF --jax-python PY                  # the full check
    python benchmarks/vs_reference_updates.py --reference REF --jax-python PY --record \\
        tests/data/reference_updates.npz                                                      # CI's small problem

``--reference`` is a checkout of the reference repository, ``--jax-python`` the Python of a virtual environment with
the versions its requirements pin (jax 0.4.35, flax 0.10.4, optax 0.2.5, distrax 0.1.5). The reference side runs in
the worker subprocess of ``vs_reference_worker.py`` (``diff_setup``, ``diff_step``); it builds the problem:

- the reference agent's parameters, randomly perturbed (target different from the critic, one action dimension's
  log-std at its floor of -10, where a log-prob rebuilt from the sample loses precision), loaded into ``BRCSAC``;
- a stream of rewards and episode ends (terminations and truncations, never both on one step: sb3-brc reads that
  case as terminal, the reference as truncated, a documented difference) fed to both return normalisers;
- per env step, ``updates`` batches with raw rewards (some large enough to clip the target support, some landing
  exactly on a bin) and the standard-normal noise of each update's two policy samples.

Each env step runs the reference's ``normalize`` and ``agent.update`` (one jitted call of ``updates`` updates), and
``BRCSAC.train(gradient_steps=updates)`` with a replay buffer that hands out those batches and a policy whose noise
is the reference's. After each env step every parameter of actor, critic (task embedding included), target critic
and temperature is compared, with the normalised rewards and the last update's losses. Reported per tensor: the
drift ``||ours - ref|| / ||ref||``, and the elements off by more than ``1e-4 * max|ref|``, counted as flipped when
within what Adam can do to an element whose gradient is rounding noise (each step moves an element by up to about
``lr`` in the direction of its gradient's sign, so two runs can part by ``2 lr`` per step; beyond that bound an
element is reported as unexplained). The control is our own update in float64 from the same start: how far each
float32 implementation drifts from it is what rounding alone does to this training.

``--record`` runs a small problem (tiny widths, few atoms, a few env steps; 1 task and 3 tasks) and stores the
reference's inputs and outputs in one ``.npz``: ``tests/test_reference_updates.py`` replays it through ``BRCSAC``
without JAX.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import numpy as np
import torch as th
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples
from torch import nn
from vs_reference import RandomEnv, Worker, cpu_model

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.common.torch_layers import BroNet

#: Parameters off by more than this share of their tensor's largest entry are counted as flipped
FLIP_TOLERANCE = 1e-4
#: The full check: (label, observation size, action size, tasks, critic width, batch)
FULL_SETTINGS = (
    ("1 task", 24, 6, 1, 128, 256),
    ("1 task", 24, 6, 1, 512, 256),
    ("10 tasks", 39, 4, 10, 128, 1024),
    ("10 tasks", 39, 4, 10, 512, 1024),
)
#: CI's small problem: tiny widths, 11 atoms, 4 env steps of 2 updates
RECORD_SETTINGS = (("1 task", 5, 2, 1, 8, 16), ("3 tasks", 5, 2, 3, 8, 16))
RECORD_PROBLEM = dict(actor_width=8, atoms=11, updates=2, steps=4)
FULL_PROBLEM = dict(actor_width=256, atoms=101, updates=2, steps=30)


# Parameter names -----------------------------------------------------------------------------------------------


def _bronet_pairs(net: BroNet, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """The flax names of a BroNet's layers (``nn.compact`` numbering: ``Dense_0``, ``LayerNorm_0``, the blocks, then
    the head ``Dense_1``), each with our layer."""
    yield f"{prefix}/Dense_0", net.input_layer[0]
    yield f"{prefix}/LayerNorm_0", net.input_layer[1]
    for k, block in enumerate(net.blocks):
        for name, index in (("Dense_0", 0), ("LayerNorm_0", 1), ("Dense_1", 3), ("LayerNorm_1", 4)):
            yield f"{prefix}/BronetBlock_{k}/{name}", block.net[index]
    if net.head is not None:
        yield f"{prefix}/Dense_1", net.head


def reference_parameters(model: BRCSAC) -> dict[str, tuple[nn.Parameter, bool]]:
    """Every parameter of ``model`` under the reference's name for it (``actor/...``, ``critic/...``,
    ``target_critic/...``, ``temp/log_temp``), and whether it is stored transposed there (flax kernels are
    ``(in, out)``, ``nn.Linear`` weights ``(out, in)``; our ensemble layers use flax's layout)."""
    layers = list(_bronet_pairs(model.actor.latent_pi, "actor/BroNet_0"))
    layers += [("actor/Dense_0", model.actor.mu), ("actor/Dense_1", model.actor.log_std)]
    for side, critic in (("critic", model.critic), ("target_critic", model.critic_target)):
        layers += _bronet_pairs(critic.q_networks, f"{side}/q_value_ensemble/q_value_ensemble/critic")
    names = {}
    for prefix, layer in layers:
        weight = "scale" if prefix.rsplit("/", 1)[-1].startswith("LayerNorm") else "kernel"
        names[f"{prefix}/{weight}"] = (layer.weight, isinstance(layer, nn.Linear))
        names[f"{prefix}/bias"] = (layer.bias, False)
    for side, critic in (("critic", model.critic), ("target_critic", model.critic_target)):
        if critic.task_embedding is not None:
            names[f"{side}/task_embedding/embeddings/embedding"] = (critic.task_embedding.embedding.weight, False)
    names["temp/log_temp"] = (model.log_ent_coef, False)
    return names


def to_reference(param: th.Tensor, transposed: bool, like: np.ndarray) -> np.ndarray:
    """Our tensor in the layout of the reference's array ``like``."""
    value = param.detach().cpu().numpy()
    return (value.T if transposed else value).reshape(like.shape)


def load_reference_parameters(model: BRCSAC, arrays: dict[str, np.ndarray]) -> None:
    with th.no_grad():
        for name, (param, transposed) in reference_parameters(model).items():
            value = arrays[name].T if transposed else arrays[name]
            param.copy_(th.as_tensor(np.ascontiguousarray(value)).reshape(param.shape))


# Our side ------------------------------------------------------------------------------------------------------


class FixedBatches:
    """Stands in for the replay buffer: ``sample`` hands out the next prepared batch."""

    def __init__(self, batches: list[ReplayBufferSamples | DictReplayBufferSamples]):
        self.batches = batches

    def sample(self, batch_size: int, env=None):
        batch = self.batches.pop(0)
        if len(batch.actions) != batch_size:
            raise RuntimeError(f"asked for {batch_size} transitions, the prepared batch has {len(batch.actions)}")
        return batch


def build_model(
    obs: int, act: int, tasks: int, width: int, actor_width: int, atoms: int, batch: int, **update_kwargs: bool
) -> BRCSAC:
    """BRCSAC with the reference's architecture at one setting, on the CPU (eager fp32 unless ``update_kwargs`` say
    ``compile_update`` or ``mixed_precision``)."""
    if tasks == 1:
        env = RandomEnv(obs, act)
    else:
        env = MultiTaskVecEnv([lambda: RandomEnv(obs, act)] * tasks, task_names=[f"random{i}" for i in range(tasks)])
    model = BRCSAC(
        "MlpPolicy",
        env,
        batch_size=batch,
        buffer_size=batch,
        policy_kwargs=dict(net_arch=dict(pi=[actor_width], qf=[width, width]), n_atoms=atoms),
        device="cpu",
        seed=0,
        **update_kwargs,
    )
    model.set_logger(configure(None, []))
    return model


def our_batches(
    data: dict[str, np.ndarray], multi_task: bool, step: int, dtype: th.dtype = th.float32
) -> ReplayBufferSamples | DictReplayBufferSamples:
    """One env step's batches as one replay sample of all its updates' rows (``train()`` draws it at once)."""

    def rows(name: str) -> th.Tensor:
        value = data[f"batch/{name}"][step]
        rows = th.as_tensor(value.reshape(-1, *value.shape[2:]))
        return rows.to(dtype) if rows.is_floating_point() else rows

    observations, next_observations = rows("observations"), rows("next_observations")
    rewards, dones = rows("rewards").unsqueeze(-1), 1.0 - rows("masks").unsqueeze(-1)
    if not multi_task:
        return ReplayBufferSamples(observations, rows("actions"), next_observations, dones, rewards)
    task_ids = rows("task_ids").long().unsqueeze(-1)
    return DictReplayBufferSamples(
        {"observation": observations, "task_id": task_ids},
        rows("actions"),
        {"observation": next_observations, "task_id": task_ids},
        dones,
        rewards,
    )


def feed_normalizer(model: BRCSAC, data: dict[str, np.ndarray]) -> None:
    """The reference's stream of rewards and episode ends, task ``i`` in env ``i``."""
    assert model.return_normalizer is not None
    terminated, truncated = data["stream_terminated"], data["stream_truncated"]
    tasks = np.arange(terminated.shape[1])
    for step in range(len(terminated)):
        ended = terminated[step] | truncated[step]
        model.return_normalizer.update(data["stream_rewards"][step], ended, truncated[step], tasks)


def relative_difference(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def adam_flip_bound(learning_rate: float, updates: int) -> float:
    """How far two Adam runs can move one element apart in ``updates`` steps, whatever its gradients: each step
    moves it by at most ``lr (1 - beta1) / sqrt(1 - beta2)`` (Kingma & Ba 2015, section 2.1; 3.16 lr at the defaults)."""
    return 2.0 * learning_rate * (1 - 0.9) / (1 - 0.999) ** 0.5 * updates


def model_arrays(model: BRCSAC, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter of ``model`` as the reference's array of the same name in ``like`` (float32)."""
    return {
        name: to_reference(param, transposed, like[name]).astype(np.float32)
        for name, (param, transposed) in reference_parameters(model).items()
    }


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], learning_rate: float, updates: int) -> dict[str, dict]:
    """Every parameter of ``ours`` against ``ref`` after ``updates`` updates: ``rel``, the relative difference of
    its elements that are not flipped; ``flipped``, elements off by more than :data:`FLIP_TOLERANCE` of the tensor's
    largest entry but within :func:`adam_flip_bound` (an element whose gradient is rounding noise takes Adam steps of
    a random sign); ``unexplained``, elements beyond that bound; ``drift``, ``||ours - ref|| / ||ref||`` over all its
    elements."""
    bound = adam_flip_bound(learning_rate, updates)
    result = {}
    for name, value in ours.items():
        diff = np.abs(value - ref[name])
        scale = max(float(np.abs(ref[name]).max()), 1e-12)
        off = diff > FLIP_TOLERANCE * scale
        result[name] = dict(
            rel=float(np.where(off, 0.0, diff).max() / scale),
            drift=float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref[name])), 1e-12)),
            flipped=int((off & (diff <= bound)).sum()),
            unexplained=int((diff > bound).sum()),
        )
    return result


class Replay:
    """Our side of the check at one setting: the model with the reference's parameters and normaliser statistics,
    stepped through the reference's batches and noise. ``step(i)`` runs env step ``i`` and returns the last update's
    losses and the rewards ``train()`` trained on. ``dtype`` and ``update_kwargs`` (``compile_update``,
    ``mixed_precision``) replay it through other ways of running the update."""

    def __init__(
        self, setup: dict[str, np.ndarray], setting: dict[str, int], dtype: th.dtype = th.float32, **update_kwargs: bool
    ):
        self.data, self.dtype = setup, dtype
        self.multi_task = setting["tasks"] > 1
        self.model = model = build_model(**setting, **update_kwargs)
        model.policy.to(dtype)
        assert model.log_ent_coef is not None  # BRC learns the temperature
        model.log_ent_coef.data = model.log_ent_coef.data.to(dtype)
        for network in (model.actor, model.critic, model.critic_target):
            # SB3's preprocessing casts Box observations to float32: back to this replay's dtype
            network.features_extractor.register_forward_pre_hook(lambda _, inputs: tuple(x.to(dtype) for x in inputs))
        load_reference_parameters(model, setup)
        feed_normalizer(model, setup)
        self.updates = setup["critic_noise"].shape[1]
        self.batch = setting["batch"]
        self.noise: list[th.Tensor] = []
        model.actor.action_dist.standard_noise = self._next_noise  # type: ignore[method-assign]
        self.captured: list[tuple[dict[str, th.Tensor], th.Tensor, th.Tensor]] = []
        choose_update = model._updates.update

        def capturing_update(batch_size: int, polyak: bool):
            update = choose_update(batch_size, polyak)  # the way the model runs its update (eager, compiled, ...)

            def capture(replay_data, rewards, polyak, actor_trainable):
                stats, entropy = update(replay_data, rewards, polyak, actor_trainable)
                self.captured.append((stats, entropy, rewards))
                return stats, entropy

            return capture

        model._updates.update = capturing_update  # type: ignore[method-assign]

    def _next_noise(self, like: th.Tensor) -> th.Tensor:
        noise = self.noise.pop(0)
        if noise.shape != like.shape:
            raise RuntimeError(f"noise of shape {tuple(noise.shape)} asked for {tuple(like.shape)}")
        return noise

    def normalizer_difference(self) -> float:
        assert self.model.return_normalizer is not None
        ours = self.model.return_normalizer.max_abs_return
        ref = np.maximum(self.data["normalizer_max"], np.abs(self.data["normalizer_min"]))
        return relative_difference(ours, ref)

    def step(self, i: int) -> dict[str, float]:
        for update in range(self.updates):
            for name in ("critic_noise", "actor_noise"):
                self.noise.append(th.as_tensor(self.data[name][i, update], dtype=self.dtype))
        batch = our_batches(self.data, self.multi_task, i, self.dtype)
        self.model.replay_buffer = FixedBatches([batch])  # type: ignore[assignment]
        self.captured.clear()
        self.model.train(gradient_steps=self.updates, batch_size=self.batch)
        if self.noise:
            raise RuntimeError(f"{len(self.noise)} noise draws left unused: the update drew fewer samples than expected")
        stats, entropy, _ = self.captured[-1]
        return dict(
            critic_loss=float(stats["critic_loss"]),
            actor_loss=float(stats["actor_loss"]),
            temp_loss=float(stats["ent_coef_loss"]),
            entropy=float(entropy.mean()),
            temperature=float(stats["ent_coef"]),  # the temperature the update used (the reference's info)
        )

    def trained_rewards(self) -> np.ndarray:
        """The normalised rewards of the last env step's updates, ``(updates, batch)``."""
        return th.stack([rewards[:, 0] for _, _, rewards in self.captured]).numpy()


def step_report(replay: Replay, reference: dict[str, np.ndarray], losses: dict[str, float], updates: int) -> dict:
    """One env step's comparison after ``updates`` updates in all: every parameter, the normalised rewards, the
    losses."""
    learning_rate = float(replay.model.lr_schedule(1))
    params = compare(model_arrays(replay.model, reference), reference, learning_rate, updates)
    worst = max(params, key=lambda name: params[name]["drift"])
    return dict(
        max_rel=max(entry["rel"] for entry in params.values()),
        drift=params[worst]["drift"],
        worst=worst,
        flipped=sum(entry["flipped"] for entry in params.values()),
        flipped_by_tensor={name: entry["flipped"] for name, entry in params.items() if entry["flipped"]},
        unexplained=sum(entry["unexplained"] for entry in params.values()),
        rewards_rel=relative_difference(replay.trained_rewards(), reference["normalized_rewards"]),
        # Relative to max(|value|, 1): the actor loss is a difference of similar terms and can lie near 0
        losses_rel={
            name: abs(value - float(reference[f"loss/{name}"])) / max(abs(float(reference[f"loss/{name}"])), 1.0)
            for name, value in losses.items()
        },
    )


# Driver --------------------------------------------------------------------------------------------------------


def plot_drift(results: list[dict], path: str) -> None:
    """Drift curves of every setting: sb3-brc against the reference, and each against our float64 update."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(results), 3.2))
    for ax, result in zip(fig.subplots(1, len(results), squeeze=False)[0], results, strict=True):
        per_step = result["per_step"]
        updates = [(i + 1) * result["updates"] for i in range(len(per_step))]
        for key, label in (
            ("drift", "sb3-brc vs reference"),
            ("ours_vs_float64", "sb3-brc vs float64"),
            ("reference_vs_float64", "reference vs float64"),
        ):
            ax.semilogy(updates, [step[key] for step in per_step], label=label)
        ax.set_title(f"{result['label']}, width {result['width']}", fontsize=10)
        ax.set_xlabel("updates")
    fig.axes[0].set_ylabel("largest ||a - b|| / ||b|| of a tensor")
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_setting(worker: Worker, args, setting: dict[str, int], problem: dict[str, int], out: str, log: Callable) -> dict:
    """Set up one problem on both sides and compare after every env step; returns the per-step reports."""
    reply = worker.ask(
        args.setup_timeout,
        cmd="diff_setup",
        out=out,
        seed=args.seed,
        init=args.jax_init,
        log_std_floor=not args.no_log_std_floor,
        **setting,
        **problem,
    )
    if reply["noise_check"] > 1e-5:
        raise RuntimeError(f"the noise computed from the reference's keys is not what it draws ({reply['noise_check']})")
    with np.load(os.path.join(out, "setup.npz")) as setup_file:
        setup = dict(setup_file)
    model_setting = dict(setting, actor_width=problem["actor_width"], atoms=problem["atoms"])
    replay = Replay(setup, model_setting)
    # The control: our update in float64 from the same start, as near to exact arithmetic as either gets. How far
    # each float32 implementation ends from it is what rounding alone does to this training
    exact = Replay(setup, model_setting, th.float64)
    learning_rate = float(replay.model.lr_schedule(1))
    steps, recorded = [], {f"setup/{name}": value for name, value in setup.items()}
    for i in range(problem["steps"]):
        answer = worker.ask(args.setup_timeout, cmd="diff_step")
        with np.load(answer["path"]) as step_file:
            reference = dict(step_file)
        updates = (i + 1) * problem["updates"]
        report = step_report(replay, reference, replay.step(i), updates)
        exact.step(i)
        exact_arrays = model_arrays(exact.model, reference)
        for side, arrays in (("ours", model_arrays(replay.model, reference)), ("reference", reference)):
            from_exact = compare({name: arrays[name] for name in exact_arrays}, exact_arrays, learning_rate, updates)
            report[f"{side}_vs_float64"] = max(entry["drift"] for entry in from_exact.values())
        steps.append(report)
        recorded.update({f"step{i}/{name}": value for name, value in reference.items()})
        log(
            f"    env step {i + 1} ({updates} updates): drift {report['drift']:.2e} ({report['worst']}), "
            f"{report['flipped']} flipped "
            f"({', '.join(f'{name} {count}' for name, count in report['flipped_by_tensor'].items())}), "
            f"{report['unexplained']} beyond Adam's bound; drift from float64: ours {report['ours_vs_float64']:.2e}, "
            f"reference {report['reference_vs_float64']:.2e}; rewards {report['rewards_rel']:.1e}, "
            + ", ".join(f"{name} {value:.1e}" for name, value in report["losses_rel"].items())
        )
    return dict(normalizer_rel=replay.normalizer_difference(), per_step=steps, recorded=recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="checkout of naumix/BiggerRegularizedCategorical")
    parser.add_argument("--jax-python", required=True, help="Python of a virtual environment with the reference's packages")
    parser.add_argument("--steps", type=int, default=FULL_PROBLEM["steps"], help="env steps (2 updates each) per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jax-init", choices=["eager", "jit"], default="eager", help="see vs_reference.py")
    parser.add_argument("--setup-timeout", type=float, default=1800.0, help="seconds to wait for any worker answer")
    parser.add_argument("--record", help="store CI's small problem (both sides' inputs, the reference's outputs) here")
    parser.add_argument("--json", help="write the per-step reports of the full check here")
    parser.add_argument("--plot", help="draw the drift curves of the full check here (PNG)")
    parser.add_argument(
        "--no-log-std-floor", action="store_true", help="leave every log-std where the perturbed parameters put it"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    settings = RECORD_SETTINGS if args.record else FULL_SETTINGS
    problem = dict(RECORD_PROBLEM) if args.record else dict(FULL_PROBLEM, steps=args.steps)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    worker = Worker(args.jax_python, args.reference, threads=1)
    results, recorded = [], {}
    try:
        versions = worker.ask(args.setup_timeout, cmd="versions")["versions"]
        for label, obs, act, tasks, width, batch in settings:
            setting = dict(obs=obs, act=act, tasks=tasks, width=width, batch=batch)
            log(f"  {label}, width {width}, batch {batch}:")
            with tempfile.TemporaryDirectory() as out:
                result = run_setting(worker, args, setting, problem, out, log)
            results.append(dict(label=label, **setting, **problem, **{k: v for k, v in result.items() if k != "recorded"}))
            recorded.update({f"{label.replace(' ', '_')}/{name}": value for name, value in result["recorded"].items()})
    finally:
        worker.close()

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, 1 thread per implementation")
    reference_versions = ", ".join(f"{name} {version}" for name, version in versions.items())
    print(f"sb3-brc: torch {th.__version__}, Python {platform.python_version()}; reference: {reference_versions}\n")
    print(
        "| setting | critic width | batch | updates | normaliser G | drift sb3-brc vs reference, every 10 updates "
        "| drift from float64: sb3-brc / reference, after the last | flipped | beyond Adam's bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        per_step = result["per_step"]
        curve = " ".join(f"{step['drift']:.0e}" for step in per_step[4::5])
        last = per_step[-1]
        print(
            f"| {result['label']} | {result['width']} | {result['batch']} | {len(per_step) * problem['updates']} "
            f"| {result['normalizer_rel']:.0e} | {curve} | {last['ours_vs_float64']:.0e} / {last['reference_vs_float64']:.0e} "
            f"| {last['flipped']} | {sum(step['unexplained'] for step in per_step)} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)
    if args.plot:
        plot_drift(results, args.plot)
    if args.record:
        settings_table = np.array(
            [
                json.dumps(dict(label=label, obs=o, act=a, tasks=t, width=w, batch=b, **problem))
                for label, o, a, t, w, b in settings
            ]
        )
        np.savez_compressed(args.record, settings=settings_table, **recorded)
        print(f"\nrecorded to {args.record} ({os.path.getsize(args.record) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
