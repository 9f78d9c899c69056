"""One check of an algorithm's hyperparameters: values outside their domain and relations SB3 does not check."""

import inspect
from typing import Any


def check_hyperparameters(model: Any) -> None:
    """Clear errors for hyperparameters SB3 stores and later fails on, or silently misuses: what BRCSAC and BRCDQN
    call right after SB3's constructor, on the values it stored (``model``'s). Messages name the algorithm's default
    (its constructor's)."""
    algorithm = type(model).__name__
    signature = inspect.signature(type(model).__init__).parameters

    def why(name: str) -> str:
        value = getattr(model, name, None)  # None: an argument this algorithm does not have (its check passes)
        default = signature[name].default if name in signature else inspect.Parameter.empty
        if default is inspect.Parameter.empty:
            return f"got {value!r}"
        # None: a default computed from the env (per-task batch, warm-up, target interval)
        return f"got {value!r}; " + (
            f"leave it out for {algorithm}'s default" if default is None else f"{algorithm}'s default is {default!r}"
        )

    def not_a_positive_int(value: Any) -> bool:
        return isinstance(value, bool) or not isinstance(value, int) or value < 1

    learning_rate = model.learning_rate
    frequency = model.train_freq[0] if isinstance(model.train_freq, tuple) else model.train_freq
    ent_coef = getattr(model, "ent_coef", "auto")  # the arguments only some algorithms have
    checks = [
        (not_a_positive_int(model.buffer_size), f"buffer_size must be a positive integer ({why('buffer_size')})"),
        (not_a_positive_int(model.batch_size), f"batch_size must be a positive integer ({why('batch_size')})"),
        (model.learning_starts < 0, f"learning_starts must be >= 0 ({why('learning_starts')})"),
        (not 0.0 <= model.tau <= 1.0, f"tau is the Polyak coefficient, in [0, 1] ({why('tau')})"),
        (not 0.0 <= model.gamma < 1.0, f"gamma must be in [0, 1) ({why('gamma')})"),
        (
            model.gradient_steps < -1,
            f"gradient_steps must be >= 0, or -1 for one per env step ({why('gradient_steps')})",
        ),
        (
            not_a_positive_int(model.target_update_interval),
            f"target_update_interval must be an integer >= 1 ({why('target_update_interval')})",
        ),
        (not callable(learning_rate) and not learning_rate > 0, f"learning_rate must be > 0 ({why('learning_rate')})"),
        (
            not_a_positive_int(getattr(frequency, "frequency", frequency)),
            f"train_freq must be a positive number of steps or episodes (got {model.train_freq!r})",
        ),
        (
            not_a_positive_int(getattr(model, "n_steps", 1)),
            f"n_steps is the length of n-step returns, an integer >= 1 ({why('n_steps')})",
        ),
        (
            not isinstance(ent_coef, str) and not ent_coef >= 0,
            f"ent_coef must be >= 0, or 'auto' / 'auto_<initial value>' to learn it ({why('ent_coef')})",
        ),
    ]
    problems = [message for bad, message in checks if bad]
    if problems:
        raise ValueError(f"Invalid {algorithm} hyperparameters: " + "; ".join(problems) + ".")
