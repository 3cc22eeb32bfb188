"""A closed optimization loop against flowdaq and a simulated reactor: copy it, swap the reactor.

    python optimizer_loop.py --control tcp://127.0.0.1:5561 --publish tcp://127.0.0.1:5560 \\
        --pull tcp://127.0.0.1:5555 --iterations 8 --target-ev 2.30

What happens per iteration (docs/feature-streams.md):
  1. the optimizer proposes a condition (Ax's AxClient when `import ax` works, else a small
     seeded random-plus-local search);
  2. the reactor switches to it and the loop registers it with flowdaq (`register_condition`)
     with the start time on the instruments' clock;
  3. the reactor's spectrometer keeps sending PL spectra (wire protocol, PUSH) without a
     `condition_id`: flowdaq tags them with the run's current condition and extracts
     `spectral_features` as they arrive;
  4. flowdaq decides when `spectral_features.peak_energy_ev` has settled (or gives up) and
     publishes one `condition_outcomes` row; the loop waits for it (`wait_outcomes`);
  5. the optimizer is told |peak_energy_ev - target|, and the loop goes on.

The simulated reactor makes CsPb(Br,I)3 nanocrystals: the PL peak energy is a smooth function
of the bromide fraction (halide composition: 1.80 eV for pure iodide to 2.43 eV for pure
bromide) and of the temperature (hotter makes larger, less confined crystals: lower energy);
the line width grows for mixed halides and away from 150 degC. After each change, peak and
width approach their new values exponentially (a first-order transient, `--time-constant-s`)
and every spectrum carries Gaussian noise. Its clock advances 100 ms per spectrum and can run
faster than real time (`--speedup`); the condition start times are on the same clock.

`main(argv)` returns the results (the tests call it); the exit status is 0 only if every
registered condition got its outcome, settled or not.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import zmq

from flowdaq import Client
from flowdaq.wire import spectrum_frames

FEATURE = "spectral_features.peak_energy_ev"
HC_EV_NM = 1239.84198
# The search space: name -> (low, high, unit sent with the condition; None for a bare number).
BOUNDS: Dict[str, Tuple[float, float, Optional[str]]] = {
    "br_fraction": (0.0, 1.0, None),
    "temperature": (80.0, 200.0, "degC"),
}
FIXED_PARAMETERS = {"cs_flow_rate": {"value": 12.5, "unit": "uL/min"}}


class SimulatedReactor:
    """A flow reactor with an in-line PL spectrometer that sends spectra to flowdaq.

    A background thread sends one spectrum per `spectrum_interval_s` of simulated time, stamped
    with `instrument_time_ns` on the reactor's own clock, `speedup` times faster than real time
    (0: as fast as the server takes them). Call `set_condition` to change the parameters.
    """

    def __init__(self, pull: str, run_id: str, source: str = "sim-pl-1", seed: int = 0,
                 context: Optional[zmq.Context] = None, pixels: int = 1024,
                 spectrum_interval_s: float = 0.1, time_constant_s: float = 2.5, speedup: float = 50.0,
                 noise_counts: float = 40.0, start_time_ns: Optional[int] = None):
        self.pull = pull
        self.run_id = run_id
        self.source = source
        self.context = context or zmq.Context.instance()
        self.wavelength_nm = np.linspace(400.0, 800.0, pixels)
        self.energy_ev = HC_EV_NM / self.wavelength_nm
        self.interval_ns = int(spectrum_interval_s * 1e9)
        self.time_constant_ns = time_constant_s * 1e9
        self.speedup = speedup
        self.noise_counts = noise_counts
        self.clock_ns = int(start_time_ns if start_time_ns is not None else time.time_ns())
        self.sent = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._from = self._to = (2.2, 0.1)  # (peak eV, FWHM eV) before and after the last change
        self._change_ns = self.clock_ns
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    @staticmethod
    def steady_state(parameters: Dict[str, float]) -> Tuple[float, float]:
        """(peak energy eV, FWHM eV) the reactor settles at under `parameters`."""
        x = float(parameters["br_fraction"])
        t = float(parameters["temperature"])
        peak = 1.80 + 0.63 * x - 0.10 * x * (1.0 - x) + 0.12 * math.exp(-(t - 80.0) / 40.0)
        fwhm = 0.075 + 0.06 * x * (1.0 - x) + 0.03 * ((t - 150.0) / 70.0) ** 2
        return peak, fwhm

    def _state_at(self, t_ns: int) -> Tuple[float, float]:
        decay = math.exp(-max(0, t_ns - self._change_ns) / self.time_constant_ns)
        return tuple(b + (a - b) * decay for a, b in zip(self._from, self._to))  # type: ignore[return-value]

    def set_condition(self, parameters: Dict[str, float]) -> int:
        """Switch to `parameters`; return when the change took effect, on the reactor clock."""
        with self._lock:
            self._from = self._state_at(self.clock_ns)
            self._to = self.steady_state(parameters)
            self._change_ns = self.clock_ns
            changed = self._change_ns
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="simulated-reactor", daemon=True)
            self._thread.start()
        return changed

    def _spectrum(self, peak_ev: float, fwhm_ev: float) -> np.ndarray:
        line = np.exp(-4.0 * math.log(2.0) * (self.energy_ev - peak_ev) ** 2 / fwhm_ev ** 2)
        return 300.0 + 20000.0 * line + self._rng.normal(0.0, self.noise_counts, self.energy_ev.shape)

    def _run(self) -> None:
        push = self.context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(self.pull)
        pace_s = self.interval_ns / 1e9 / self.speedup if self.speedup else 0.0
        try:
            while not self._stop.is_set():
                with self._lock:
                    t_ns = self.clock_ns
                    peak, fwhm = self._state_at(t_ns)
                    self.clock_ns += self.interval_ns
                frames = spectrum_frames(self.source, self.sent, self.wavelength_nm, self._spectrum(peak, fwhm),
                                         run_id=self.run_id, instrument_time_ns=t_ns)
                while not self._stop.is_set() and not push.poll(100, zmq.POLLOUT):
                    pass  # the server is behind: PUSH waits (losslessly), we keep an eye on stop
                if self._stop.is_set():
                    break
                push.send_multipart(frames)
                self.sent += 1
                if pace_s:
                    time.sleep(pace_s)
        except BaseException as err:  # surfaced by stop()
            self.error = err
        finally:
            push.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.error is not None:
            raise RuntimeError("the simulated reactor failed") from self.error


class LocalSearch:
    """Fallback optimizer (no Ax): a few uniform random points, then Gaussian steps around the
    best point so far, the step shrinking after every proposal that did not improve."""

    name = "random+local"

    def __init__(self, bounds: Dict[str, Tuple[float, float, Optional[str]]], seed: int, initial: int = 3,
                 step: float = 0.25, shrink: float = 0.6):
        self.bounds = bounds
        self.rng = np.random.default_rng(seed)
        self.initial = initial
        self.step = step
        self.shrink = shrink
        self.trials: Dict[int, Dict[str, float]] = {}
        self.best: Optional[Tuple[float, Dict[str, float]]] = None

    def ask(self) -> Tuple[int, Dict[str, float]]:
        trial = len(self.trials)
        if trial < self.initial or self.best is None:
            point = {n: float(self.rng.uniform(lo, hi)) for n, (lo, hi, _) in self.bounds.items()}
        else:
            point = {n: float(np.clip(self.best[1][n] + self.rng.normal(0.0, self.step * (hi - lo)), lo, hi))
                     for n, (lo, hi, _) in self.bounds.items()}
        self.trials[trial] = point
        return trial, point

    def tell(self, trial: int, value: Optional[float]) -> None:
        if value is not None and (self.best is None or value < self.best[0]):
            self.best = (value, self.trials[trial])
        elif trial >= self.initial:
            self.step *= self.shrink


class AxOptimizer:
    """Ax's service API (AxClient): Sobol first, then Bayesian optimization."""

    name = "ax"

    def __init__(self, bounds: Dict[str, Tuple[float, float, Optional[str]]], seed: int):
        from ax.service.ax_client import AxClient, ObjectiveProperties

        self.client = AxClient(random_seed=seed, verbose_logging=False)
        self.client.create_experiment(
            name="flowdaq-emission-target",
            parameters=[{"name": n, "type": "range", "bounds": [lo, hi], "value_type": "float"}
                        for n, (lo, hi, _) in bounds.items()],
            objectives={"abs_error_ev": ObjectiveProperties(minimize=True)},
        )

    def ask(self) -> Tuple[int, Dict[str, float]]:
        parameters, trial = self.client.get_next_trial()
        return trial, {n: float(v) for n, v in parameters.items()}

    def tell(self, trial: int, value: Optional[float]) -> None:
        if value is None:
            self.client.log_trial_failure(trial_index=trial)
        else:
            self.client.complete_trial(trial_index=trial, raw_data={"abs_error_ev": (value, None)})


def make_optimizer(kind: str, seed: int):
    if kind in ("auto", "ax"):
        try:
            return AxOptimizer(BOUNDS, seed)
        except Exception as err:  # ImportError, or an Ax whose API moved on
            if kind == "ax":
                raise
            print(f"Ax not usable ({type(err).__name__}: {err}); using the fallback search", file=sys.stderr)
    return LocalSearch(BOUNDS, seed)


def condition_parameters(point: Dict[str, float]) -> Dict[str, Any]:
    """The condition as registered: numbers with their units, plus the fixed settings."""
    parameters: Dict[str, Any] = {}
    for name, value in point.items():
        unit = BOUNDS[name][2]
        parameters[name] = round(value, 6) if unit is None else {"value": round(value, 6), "unit": unit}
    parameters.update(FIXED_PARAMETERS)
    return parameters


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control", default="tcp://127.0.0.1:5561", help="flowdaq's control endpoint")
    parser.add_argument("--publish", default="tcp://127.0.0.1:5560", help="flowdaq's feature stream (PUB)")
    parser.add_argument("--pull", default="tcp://127.0.0.1:5555", help="flowdaq's PULL endpoint for spectra")
    parser.add_argument("--run-id", default=None, help="default: optimizer-<date>-<time>")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--target-ev", type=float, default=2.30, help="wanted PL peak energy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=("auto", "ax", "fallback"), default="auto")
    parser.add_argument("--source", default="sim-pl-1", help="the spectrometer's source id")
    parser.add_argument("--speedup", type=float, default=50.0, help="simulated seconds per real second (0: flat out)")
    parser.add_argument("--time-constant-s", type=float, default=2.5, help="the reactor's transient")
    parser.add_argument("--outcome-timeout-s", type=float, default=120.0, help="wall-clock wait per outcome")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    run_id = args.run_id or time.strftime("optimizer-%Y%m%d-%H%M%S")
    optimizer = make_optimizer(args.optimizer, args.seed)
    client = Client(args.control, args.publish)
    reactor = SimulatedReactor(args.pull, run_id, source=args.source, seed=args.seed, speedup=args.speedup,
                               time_constant_s=args.time_constant_s)
    results: List[Dict[str, Any]] = []
    print(f"run {run_id}: {args.iterations} conditions, target {args.target_ev:.3f} eV, optimizer {optimizer.name}")
    try:
        # One subscription for the whole run: outcomes published while we were busy are kept.
        with client.subscribe([f"condition_outcomes/{run_id}/"], from_start=True) as outcomes:
            for iteration in range(args.iterations):
                trial, point = optimizer.ask()
                condition_id = f"c-{iteration:04d}"
                start_ns = reactor.set_condition(point)
                client.register_condition(run_id, condition_id, condition_parameters(point),
                                          start_time_ns=start_ns, registered_by="optimizer-loop")
                entry: Dict[str, Any] = {"condition_id": condition_id, "parameters": point,
                                         "start_time_ns": start_ns,
                                         "expected_peak_ev": reactor.steady_state(point)[0],
                                         "outcome": None, "objective": None}
                results.append(entry)
                try:
                    rows = client.wait_outcomes(run_id, [condition_id], [FEATURE], args.outcome_timeout_s,
                                                subscription=outcomes, source=reactor.source)
                except TimeoutError as err:
                    print(f"  {condition_id}: {err}", file=sys.stderr)
                    optimizer.tell(trial, None)
                    continue
                outcome = rows[0]
                entry["outcome"] = outcome
                if outcome.get("mean") is not None:
                    entry["objective"] = abs(outcome["mean"] - args.target_ev)
                optimizer.tell(trial, entry["objective"])
                shown = ", ".join(f"{n}={v:.3f}" for n, v in point.items())
                mean = "none" if outcome.get("mean") is None else f"{outcome['mean']:.4f} eV"
                state = "settled" if outcome.get("settled") else f"not settled ({outcome.get('reason')})"
                print(f"  {condition_id} [{shown}]: peak {mean} {state} over {outcome.get('count')} spectra"
                      + ("" if entry["objective"] is None else f", |error| {entry['objective']:.4f} eV"))
    finally:
        reactor.stop()
    scored = [r for r in results if r["objective"] is not None]
    best = min(scored, key=lambda r: r["objective"]) if scored else None
    all_outcomes = len(results) == args.iterations and all(r["outcome"] is not None for r in results)
    settled = sum(1 for r in results if r["outcome"] and r["outcome"].get("settled"))
    print(f"{len(results)} conditions registered, {sum(r['outcome'] is not None for r in results)} outcomes "
          f"({settled} settled), {reactor.sent} spectra sent")
    if best is not None:
        print(f"best: {best['condition_id']} peak {best['outcome']['mean']:.4f} eV, "
              f"|error| {best['objective']:.4f} eV at "
              + ", ".join(f"{n}={v:.3f}" for n, v in best["parameters"].items()))
    return {"run_id": run_id, "target_ev": args.target_ev, "optimizer": optimizer.name, "conditions": results,
            "best": best, "all_outcomes": all_outcomes, "spectra_sent": reactor.sent}


if __name__ == "__main__":
    sys.exit(0 if main()["all_outcomes"] else 1)
