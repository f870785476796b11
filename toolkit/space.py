"""Search spaces written as define-by-run Python functions.

A search space is a plain function ``fn(hp, **kwargs)`` that asks ``hp`` for
hyperparameter values and returns a JSON-able description of an architecture.
:class:`SearchSpace` runs that function in different ways:

* ``sample(rng)`` draws every value it is asked for and returns the *config*,
  a flat ``{name: value}`` mapping of the hyperparameters that were touched;
* ``replay(config)`` feeds a config back and returns the same architecture,
  refusing a config that is missing a value, has an extra one or has one out
  of its domain;
* ``describe()`` lists every hyperparameter with its domain, conditional ones
  included, and ``fingerprint`` hashes that listing.

Nothing here imports TensorFlow: sampling happens in the search process, and
models are built only on workers.

Examples
--------
>>> def mlp(hp, num_classes=10):
...     layers = hp.repeat("layers", lambda h: {"units": h.int("units", 16, 256, log=True)}, 1, 3)
...     return {"layers": layers, "lr": hp.float("lr", 1e-4, 1e-1, log=True), "out": num_classes}
>>> space = SearchSpace(mlp, num_classes=10)
>>> config = space.sample(0)
>>> space.replay(config) == space.replay(dict(config))
True
>>> sorted(space.describe())
['layer0/units', 'layer1/units', 'layer2/units', 'layers', 'lr']
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from toolkit.errors import ConfigError, SpaceError

__all__ = ["HP", "Bool", "Choice", "Domain", "Float", "Int", "SearchSpace", "as_rng"]

Config = dict[str, Any]
_SCALARS = (str, int, float, bool, type(None))


def as_rng(rng: Any = None) -> random.Random:
    """Turn ``None``, an int seed, a ``random.Random`` or a numpy Generator into a ``random.Random``.

    Examples
    --------
    >>> as_rng(3).random() == as_rng(3).random()
    True
    """
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    if hasattr(rng, "integers"):  # numpy.random.Generator
        return random.Random(int(rng.integers(0, 2**63 - 1)))
    raise TypeError(
        f"rng must be None, an int seed, random.Random or numpy.random.Generator; got {rng!r}. "
        "Pass, for example, space.sample(rng=0)."
    )


# --------------------------------------------------------------------------- domains


class Domain:
    """A hyperparameter's set of allowed values. Subclasses are immutable."""

    kind = "domain"
    __slots__ = ()

    def sample(self, rng: random.Random) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def contains(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def coerce(self, value: Any) -> Any:
        """The canonical form of an accepted value (for example ``1`` -> ``1.0`` for floats)."""
        return value

    def default(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def grid_values(self) -> list[Any]:
        """Every value, in order; only finite domains have one."""
        raise ConfigError(
            f"{self} has no finite grid. Use a choice or an int for grid search, "
            "or give its values with GridSearcher(values={name: [...]})."
        )

    def explore_values(self) -> list[Any]:
        """Values worth trying when mapping out conditional branches."""
        return self.grid_values()

    def mutate(self, value: Any, rng: random.Random) -> Any:
        """A value different from ``value`` when the domain has one."""
        for _ in range(16):
            new = self.sample(rng)
            if new != value:
                return new
        return value

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True``, ``1`` and ``1.0`` apart."""
    return type(a) is type(b) and a == b


class Choice(Domain):
    """One of a list of JSON scalars (str, int, float, bool or None)."""

    kind = "choice"
    __slots__ = ("options",)

    def __init__(self, options: Any):
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise SpaceError(
                f"choice options must be a list of values; got {options!r}. "
                "Write, for example, hp.choice('optimizer', ['adam', 'sgd'])."
            )
        options = tuple(options)
        if not options:
            raise SpaceError(
                "choice options must not be empty; got []. "
                "Give at least one value, for example hp.choice('optimizer', ['adam'])."
            )
        for opt in options:
            if not isinstance(opt, _SCALARS) or isinstance(opt, float) and not math.isfinite(opt):
                raise SpaceError(
                    f"choice options must be JSON scalars (str, int, float, bool or None); "
                    f"got {opt!r} of type {type(opt).__name__} in {list(options)!r}. "
                    "Use a string key instead and map it to the object inside the space function."
                )
        for i, a in enumerate(options):
            if any(_same(a, b) for b in options[:i]):
                raise SpaceError(
                    f"choice options must be distinct; {a!r} appears twice in {list(options)!r}."
                )
        self.options = options

    def sample(self, rng: random.Random) -> Any:
        return self.options[int(rng.random() * len(self.options))]

    def contains(self, value: Any) -> bool:
        return any(_same(value, o) for o in self.options)

    def default(self) -> Any:
        return self.options[0]

    def grid_values(self) -> list[Any]:
        return list(self.options)

    def mutate(self, value: Any, rng: random.Random) -> Any:
        others = [o for o in self.options if not _same(o, value)]
        return others[int(rng.random() * len(others))] if others else value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "choice", "options": list(self.options)}


class Int(Domain):
    """An integer in ``[low, high]`` on a grid of ``step``, optionally log-uniform."""

    kind = "int"
    __slots__ = ("low", "high", "step", "log")

    def __init__(self, low: int, high: int, step: int = 1, log: bool = False):
        for label, v in (("low", low), ("high", high), ("step", step)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise SpaceError(f"int {label} must be an int; got {v!r}. Use hp.float for real numbers.")
        if low > high:
            raise SpaceError(f"int low must be <= high; got low={low}, high={high}. Swap them.")
        if step < 1:
            raise SpaceError(f"int step must be >= 1; got step={step}.")
        if log and low <= 0:
            raise SpaceError(f"log scale needs low > 0; got low={low}, high={high}. Use low=1 or log=False.")
        if log and step != 1:
            raise SpaceError(f"log scale needs step=1; got step={step}. Drop step or set log=False.")
        self.low, self.high, self.step, self.log = low, high, step, bool(log)

    @property
    def size(self) -> int:
        return (self.high - self.low) // self.step + 1

    def sample(self, rng: random.Random) -> int:
        if self.log:
            v = round(math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5))))
            return min(max(int(v), self.low), self.high)
        return self.low + self.step * int(rng.random() * self.size)

    def contains(self, value: Any) -> bool:
        return type(value) is int and self.low <= value <= self.high and (value - self.low) % self.step == 0

    def default(self) -> int:
        return self.low

    def grid_values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def explore_values(self) -> list[int]:
        if self.size <= 32:
            return self.grid_values()
        mid = self.low + self.step * (self.size // 2)
        return [self.low, mid, self.low + self.step * (self.size - 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "int", "low": self.low, "high": self.high, "step": self.step, "log": self.log}


class Float(Domain):
    """A real number in ``[low, high]``, uniform or log-uniform."""

    kind = "float"
    __slots__ = ("low", "high", "log")

    def __init__(self, low: float, high: float, log: bool = False):
        for label, v in (("low", low), ("high", high)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise SpaceError(f"float {label} must be a finite number; got {v!r}.")
        if low > high:
            raise SpaceError(f"float low must be <= high; got low={low}, high={high}. Swap them.")
        if log and low <= 0:
            raise SpaceError(
                f"log scale needs low > 0; got low={low}, high={high}. "
                "Use a positive low such as 1e-5, or log=False."
            )
        self.low, self.high, self.log = float(low), float(high), bool(log)

    def sample(self, rng: random.Random) -> float:
        if self.log:
            v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            v = rng.uniform(self.low, self.high)
        return min(max(v, self.low), self.high)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and self.low <= value <= self.high
        )

    def coerce(self, value: Any) -> float:
        return float(value)

    def default(self) -> float:
        return self.low

    def explore_values(self) -> list[float]:
        return [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "float", "low": self.low, "high": self.high, "log": self.log}


class Bool(Domain):
    """``True`` or ``False``."""

    kind = "bool"
    __slots__ = ()

    def sample(self, rng: random.Random) -> bool:
        return rng.random() < 0.5

    def contains(self, value: Any) -> bool:
        return type(value) is bool

    def default(self) -> bool:
        return False

    def grid_values(self) -> list[bool]:
        return [False, True]

    def mutate(self, value: Any, rng: random.Random) -> bool:
        return not value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bool"}


_BOOL = Bool()
_CACHE: dict[tuple, Domain] = {}


def _cached(key: tuple, make: Callable[[], Domain]) -> Domain:
    try:
        return _CACHE[key]
    except KeyError:
        pass
    except TypeError:  # unhashable options: build (and fail) without caching
        return make()
    dom = make()
    if len(_CACHE) < 100_000:
        _CACHE[key] = dom
    return dom


def domain_from_dict(d: Mapping[str, Any]) -> Domain:
    """Rebuild a domain from :meth:`Domain.to_dict` output."""
    kind = d.get("kind")
    if kind == "choice":
        return Choice(d["options"])
    if kind == "int":
        return Int(d["low"], d["high"], d.get("step", 1), d.get("log", False))
    if kind == "float":
        return Float(d["low"], d["high"], d.get("log", False))
    if kind == "bool":
        return _BOOL
    raise SpaceError(f"unknown domain kind {kind!r} in {dict(d)!r}; expected choice, int, float or bool.")


# --------------------------------------------------------------------------- hp


Proposer = Callable[[str, Domain], Any]


class HP:
    """The object a space function receives; each call declares one hyperparameter.

    A name used twice with the same domain returns the same value (a shared
    hyperparameter); used with two different domains it is an error.
    """

    __slots__ = ("_record", "_propose", "_prefix")

    def __init__(self, record: dict[str, tuple[Domain, Any]], propose: Proposer, prefix: str = ""):
        self._record = record
        self._propose = propose
        self._prefix = prefix

    def _get(self, name: str, domain: Domain) -> Any:
        if not isinstance(name, str) or not name:
            raise SpaceError(f"hyperparameter names must be non-empty strings; got {name!r}.")
        full = self._prefix + name
        seen = self._record.get(full)
        if seen is not None:
            if seen[0] != domain:
                raise SpaceError(
                    f"hyperparameter {full!r} is declared with two different domains: "
                    f"{seen[0]!r} and {domain!r}. Give each a name of its own."
                )
            return seen[1]
        value = self._propose(full, domain)
        self._record[full] = (domain, value)
        return value

    def choice(self, name: str, options: Any) -> Any:
        """One of ``options`` (JSON scalars)."""
        if not isinstance(options, (list, tuple)):
            return self._get(name, Choice(options))
        key = ("c", tuple((type(o), o) for o in options))
        return self._get(name, _cached(key, lambda: Choice(options)))

    def int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        """An integer in ``[low, high]``."""
        key = ("i", type(low), low, type(high), high, step, bool(log))
        return self._get(name, _cached(key, lambda: Int(low, high, step, log)))

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        """A real number in ``[low, high]``; ``log=True`` samples it log-uniformly."""
        key = ("f", type(low), low, type(high), high, bool(log))
        return self._get(name, _cached(key, lambda: Float(low, high, log)))

    def bool(self, name: str) -> bool:
        """``True`` or ``False``."""
        return self._get(name, _BOOL)

    def scope(self, prefix: str) -> HP:
        """An ``hp`` whose names are qualified by ``prefix/``."""
        return HP(self._record, self._propose, f"{self._prefix}{prefix}/")

    def optional(self, name: str, fn: Callable[[HP], Any]) -> Any:
        """``fn(hp.scope(name))`` when the bool ``name`` is on, else ``None``."""
        return fn(self.scope(name)) if self.bool(name) else None

    def repeat(
        self, name: str, fn: Callable[[HP], Any], low: int, high: int, prefix: str | None = None
    ) -> list[Any]:
        """Between ``low`` and ``high`` copies of ``fn``; copy ``i`` is scoped ``{prefix}{i}/``.

        The count is the int ``name``; ``prefix`` defaults to ``name`` without a
        trailing ``s``, so ``repeat("layers", ...)`` names ``layer0/units``.
        """
        n = self.int(name, low, high)
        stem = prefix if prefix is not None else (name[:-1] if name.endswith("s") else name)
        return [fn(self.scope(f"{stem}{i}")) for i in range(n)]

    def one_of(self, name: str, branches: Mapping[str, Callable[[HP], Any]]) -> Any:
        """Choose a branch by key (the choice ``name``), then run it scoped ``name/key/``."""
        key = self.choice(name, list(branches))
        return branches[key](self.scope(f"{name}/{key}"))


# --------------------------------------------------------------------------- space


def _jsonable(obj: Any) -> bool:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class SearchSpace:
    """A define-by-run search space over a function ``fn(hp, **kwargs)``.

    Parameters
    ----------
    fn
        The space function. It must return a JSON-able architecture description
        and must not import TensorFlow.
    **kwargs
        Fixed keyword arguments of ``fn`` (JSON-able; they are recorded in the
        journal and are part of the fingerprint).

    Examples
    --------
    >>> def net(hp):
    ...     return {"depth": hp.int("depth", 1, 3), "act": hp.choice("act", ["relu", "tanh"])}
    >>> space = SearchSpace(net)
    >>> space.replay({"depth": 2, "act": "relu"})
    {'depth': 2, 'act': 'relu'}
    >>> len(space.fingerprint)
    16
    """

    def __init__(self, fn: Callable[..., Any], **kwargs: Any):
        if not callable(fn):
            raise SpaceError(f"a search space needs a function fn(hp, **kwargs); got {fn!r}.")
        if not _jsonable(kwargs):
            raise SpaceError(
                f"space keyword arguments must be JSON-able (they are recorded in the journal); "
                f"got {kwargs!r}. Pass plain numbers, strings, lists or dicts."
            )
        self.fn = fn
        self.kwargs = kwargs
        self._described: dict[str, Domain] | None = None
        self._fingerprint: str | None = None

    # -- identity ---------------------------------------------------------------
    @property
    def path(self) -> str:
        """``module:qualname`` of the space function, used to rebuild it on resume."""
        return f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"

    @property
    def fingerprint(self) -> str:
        """A 16-hex-digit hash of every domain and the keyword arguments.

        It is the same in every process and changes when any domain changes.
        """
        if self._fingerprint is None:
            doc = {
                "kwargs": self.kwargs,
                "hyperparameters": {n: d.to_dict() for n, d in sorted(self.describe().items())},
            }
            blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            self._fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return self._fingerprint

    def to_dict(self) -> dict[str, Any]:
        """What ``experiment.json`` records of the space."""
        return {
            "fn": self.path,
            "kwargs": self.kwargs,
            "fingerprint": self.fingerprint,
            "hyperparameters": {n: d.to_dict() for n, d in self.describe().items()},
        }

    def __repr__(self) -> str:
        return f"SearchSpace({self.path}, fingerprint={self.fingerprint})"

    # -- running the function -----------------------------------------------------
    def run(self, propose: Proposer) -> tuple[Any, dict[str, tuple[Domain, Any]]]:
        """Run the space function with ``propose(name, domain) -> value``.

        Returns the architecture and the record ``{name: (domain, value)}`` of
        the hyperparameters touched, in order. Searchers that propose values
        themselves (Optuna's) use this.
        """
        record: dict[str, tuple[Domain, Any]] = {}
        arch = self.fn(HP(record, propose), **self.kwargs)
        return arch, record

    def sample(self, rng: Any = None) -> Config:
        """Draw a config: every hyperparameter the function touches, sampled from ``rng``."""
        return self.sample_with_arch(rng)[0]

    def sample_with_arch(self, rng: Any = None) -> tuple[Config, Any]:
        """Draw a config and return it with its architecture."""
        r = as_rng(rng)
        arch, record = self.run(lambda name, dom: dom.sample(r))
        return {n: v for n, (_, v) in record.items()}, arch

    def replay(self, config: Mapping[str, Any]) -> Any:
        """The architecture of ``config``; raises :class:`ConfigError` if it does not fit."""
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"a config must be a mapping {{name: value}}; got {type(config).__name__} {config!r}."
            )

        def propose(name: str, dom: Domain) -> Any:
            if name not in config:
                raise ConfigError(
                    f"config is missing hyperparameter {name!r} ({dom!r}) that the space "
                    f"{self.fingerprint} asks for. Sample a new config, or add a value for {name!r}."
                )
            value = config[name]
            if not dom.contains(value):
                raise ConfigError(
                    f"config value {name}={value!r} is outside its domain {dom!r} "
                    f"(space {self.fingerprint}). Use a value inside the domain."
                )
            return dom.coerce(value)

        arch, record = self.run(propose)
        extra = [k for k in config if k not in record]
        if extra:
            raise ConfigError(
                f"config has hyperparameter(s) {extra} that the space {self.fingerprint} does not use "
                f"for these values (the space touched {list(record)}). Remove them: a config holds "
                "only the hyperparameters its sample touched."
            )
        if not _jsonable(arch):
            raise SpaceError(
                f"the space function {self.path} returned an architecture that is not JSON-able: "
                f"{arch!r:.200}. Return dicts, lists, strings and numbers only."
            )
        return arch

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` unless ``config`` fits the space."""
        self.replay(config)

    def mutate(self, config: Mapping[str, Any], rng: Any = None) -> Config:
        """Change one hyperparameter of ``config`` and return the new config.

        A conditional hyperparameter that becomes active is sampled; one that
        becomes inactive is dropped.
        """
        r = as_rng(rng)
        names = list(config)
        if not names:
            return self.sample(r)
        target = names[int(r.random() * len(names))]

        def propose(name: str, dom: Domain) -> Any:
            if name in config and dom.contains(config[name]):
                value = dom.coerce(config[name])
                return dom.mutate(value, r) if name == target else value
            return dom.sample(r)

        _, record = self.run(propose)
        return {n: v for n, (_, v) in record.items()}

    # -- structure ------------------------------------------------------------------
    def describe(self) -> dict[str, Domain]:
        """Every hyperparameter with its domain, conditional ones included.

        The function is run along each value of its discrete hyperparameters
        (and the ends of numeric ranges) until no new name appears, so branches
        that only a particular value opens are found. Results are cached.
        """
        if self._described is None:
            self._described = self._explore()
        return dict(self._described)

    def _explore(self, max_runs: int = 20_000) -> dict[str, Domain]:
        domains: dict[str, Domain] = {}
        seen_fixed: set[tuple] = {()}
        queue: deque[dict[str, Any]] = deque([{}])
        runs = 0
        while queue and runs < max_runs:
            fixed = queue.popleft()

            def propose(name: str, dom: Domain, fixed: dict[str, Any] = fixed) -> Any:
                v = fixed.get(name, _MISSING)
                return v if v is not _MISSING and dom.contains(v) else dom.default()

            arch, record = self.run(propose)
            runs += 1
            if runs == 1 and not _jsonable(arch):
                raise SpaceError(
                    f"the space function {self.path} returned an architecture that is not JSON-able: "
                    f"{arch!r:.200}. Return dicts, lists, strings and numbers only."
                )
            novel = not fixed
            for name, (dom, _) in record.items():
                old = domains.get(name)
                if old is None:
                    domains[name] = dom
                    novel = True
                elif old != dom:
                    raise SpaceError(
                        f"hyperparameter {name!r} is declared with two different domains in different "
                        f"branches: {old!r} and {dom!r}. Give each a name of its own."
                    )
            if not novel:
                continue
            for name, (dom, value) in record.items():
                if name in fixed:
                    continue
                for alt in dom.explore_values():
                    if _same(alt, value):
                        continue
                    child = {**fixed, name: alt}
                    key = tuple(sorted((k, type(v).__name__, v) for k, v in child.items()))
                    if key not in seen_fixed:
                        seen_fixed.add(key)
                        queue.append(child)
        return domains

    def grid(self, values: Mapping[str, list[Any]] | None = None) -> Iterator[Config]:
        """Every config of a finite space, in a fixed order, conditional branches included.

        ``values`` gives the grid of a hyperparameter that has none (a float)
        or narrows one that has.
        """
        values = dict(values or {})
        path: list[int] = []
        while True:
            sizes: list[int] = []

            def propose(name: str, dom: Domain, sizes: list[int] = sizes, path: list[int] = path) -> Any:
                opts = values[name] if name in values else dom.grid_values()
                i = len(sizes)
                sizes.append(len(opts))
                return opts[path[i] if i < len(path) else 0]

            _, record = self.run(propose)
            yield {n: v for n, (_, v) in record.items()}
            path = (path + [0] * len(sizes))[: len(sizes)]
            j = len(sizes) - 1
            while j >= 0 and path[j] + 1 >= sizes[j]:
                j -= 1
            if j < 0:
                return
            path = path[:j] + [path[j] + 1]


_MISSING = object()
