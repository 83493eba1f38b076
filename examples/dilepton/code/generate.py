"""Synthetic dilepton events: a Drell-Yan-like continuum plus a Z' resonance, as ROOT files.

Each run is one ROOT file with a TTree ``events``:

    event    uint64   event number within the run
    run      int32    run number
    mll      float32  dilepton invariant mass [GeV]
    channel  int32    11 = ee, 13 = mumu (the lepton's PDG code)
    weight   float32  event weight (1 for data)

The continuum falls like ``m^-3 exp(-m / 600 GeV)`` above 200 GeV; the resonance is a
Gaussian at 750 GeV whose width is the detector resolution (1.2 % for ee, 3 % for mumu), with
``sigma x B x luminosity x (acceptance x efficiency)`` events per channel. A run and a seed fix
every event, so anyone regenerates the same events (ROOT files carry creation times, so the
bytes differ). Needs numpy and uproot only:

    python generate.py --output data --runs 3 --events 20000

writes ``data/run001/events.root`` ... ``data/run003/events.root``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

TREE = "events"
EE, MUMU = 11, 13
CHANNEL_NAMES = {EE: "ee", MUMU: "mumu"}
MASS_RANGE = (200.0, 3000.0)  # GeV, generated continuum
BACKGROUND_POWER, BACKGROUND_SCALE = 3.0, 600.0  # m^-k exp(-m / scale)
BACKGROUND_EE_FRACTION = 0.45
SIGNAL_MASS = 750.0  # GeV
SIGNAL_XSEC_FB = 0.7  # sigma x B(Z' -> ll) per lepton flavour [fb]
RESOLUTION = {EE: 0.012, MUMU: 0.03}  # relative mass resolution
EFFICIENCY = {EE: 0.70, MUMU: 0.45}  # signal acceptance x efficiency
LUMINOSITY_PER_RUN = 40.0  # fb^-1
EVENTS_PER_RUN = 20_000  # background events
SEED = 2024


def _continuum(rng: np.random.Generator, count: int) -> np.ndarray:
    """Inverse-transform sampling of m^-k exp(-m/scale) on MASS_RANGE from a fine table."""
    grid = np.linspace(*MASS_RANGE, 28_001)
    pdf = grid**-BACKGROUND_POWER * np.exp(-grid / BACKGROUND_SCALE)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2)])
    return np.interp(rng.random(count), cdf / cdf[-1], grid)


def generate(
    run: int,
    events: int = EVENTS_PER_RUN,
    *,
    seed: int = SEED,
    signal_xsec_fb: float = SIGNAL_XSEC_FB,
    signal_mass: float = SIGNAL_MASS,
    luminosity_fb: float = LUMINOSITY_PER_RUN,
) -> dict[str, np.ndarray]:
    """The events of one run (``events`` continuum events plus a Poisson number of signal)."""
    rng = np.random.default_rng([seed, run])
    masses, channels = [], []
    n_ee = rng.binomial(events, BACKGROUND_EE_FRACTION)
    for channel, count in ((EE, n_ee), (MUMU, events - n_ee)):
        signal = rng.poisson(signal_xsec_fb * luminosity_fb * EFFICIENCY[channel])
        smeared = rng.normal(signal_mass, RESOLUTION[channel] * signal_mass, signal)
        masses += [_continuum(rng, count), smeared]
        channels += [np.full(count + signal, channel, dtype=np.int32)]
    mll = np.concatenate(masses).astype(np.float32)
    order = rng.permutation(len(mll))  # signal events are not all at the end
    total = len(mll)
    return {
        "event": np.arange(total, dtype=np.uint64),
        "run": np.full(total, run, dtype=np.int32),
        "mll": mll[order],
        "channel": np.concatenate(channels)[order],
        "weight": np.ones(total, dtype=np.float32),
    }


def write(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """One ROOT file with the TTree ``events``."""
    import uproot

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(str(path)) as out:
        out[TREE] = arrays


def root_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The ROOT file's bytes (uproot writes to files, so through a temporary one)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.root"
        write(path, arrays)
        return path.read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("data"), help="directory to fill")
    parser.add_argument("--runs", type=int, default=3, help="runs 1..N, one file each")
    parser.add_argument("--events", type=int, default=EVENTS_PER_RUN, help="continuum per run")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--signal-xsec", type=float, default=SIGNAL_XSEC_FB, help="fb")
    parser.add_argument("--signal-mass", type=float, default=SIGNAL_MASS, help="GeV")
    parser.add_argument("--luminosity", type=float, default=LUMINOSITY_PER_RUN, help="fb^-1/run")
    args = parser.parse_args(argv)
    for run in range(1, args.runs + 1):
        arrays = generate(
            run,
            args.events,
            seed=args.seed,
            signal_xsec_fb=args.signal_xsec,
            signal_mass=args.signal_mass,
            luminosity_fb=args.luminosity,
        )
        path = args.output / f"run{run:03d}" / "events.root"
        write(path, arrays)
        print(f"{path}: {len(arrays['mll'])} events")


if __name__ == "__main__":
    main()
