"""A dilepton resonance search: background fit, signal scan and 95% CL upper limits.

Reads every ROOT file under ``--inputs`` (TTree ``events``: ``mll``, ``channel``, ``weight``),
fills the ee and mumu mass spectra and fits them together with a binned Poisson likelihood:

* background, per channel: ``dN/dm = exp(p0 + p1 x + p2 ln x)`` with ``x = m / 1 TeV`` (an
  exponential times a power law, the usual falling Drell-Yan shape), all three parameters free;
* signal: a Gaussian at the tested mass ``M`` with the channel's resolution, normalised to
  ``sigma x B x luminosity x (acceptance x efficiency)``; ``sigma x B`` is the parameter of
  interest, common to both channels (lepton universality).

For each mass of the scan: the local significance of a signal, and the 95% CL upper limit on
``sigma x B`` with CLs and the asymptotic formulae for the test statistic q~mu (Cowan,
Cranmer, Gross, Vitells, EPJC 71 (2011) 1554), background parameters profiled; the expected
limit and its 1 and 2 sigma bands come from the background-only Asimov data set. The largest
excess is then fitted with its mass free. Writes ``summary.json`` (the numbers) and
``fit.json`` (histograms and fitted expectations, for ``plot.py``). Needs numpy, scipy, uproot.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from scipy import optimize, special, stats

# Signal model, as measured on signal simulation: resolution and acceptance x efficiency.
CHANNELS = {"ee": 11, "mumu": 13}  # name -> the `channel` branch's value
RESOLUTION = {"ee": 0.012, "mumu": 0.03}  # sigma_m / m
EFFICIENCY = {"ee": 0.70, "mumu": 0.45}
CL = 0.95
NODES, WEIGHTS = np.polynomial.legendre.leggauss(4)  # a bin's count integrates the density


class Channel:
    """One channel's histogram, background model (3 parameters) and signal shape."""

    def __init__(self, name: str, counts: np.ndarray, edges: np.ndarray, lumi: float) -> None:
        self.name, self.counts, self.edges = name, counts.astype(float), edges
        half = np.diff(edges)[:, None] / 2
        x = ((edges[:-1, None] + edges[1:, None]) / 2 + half * NODES[None, :]) / 1000.0
        self.design = np.stack([np.ones_like(x), x, np.log(x)], axis=-1)  # (bins, nodes, 3)
        self.outer = self.design[..., :, None] * self.design[..., None, :]  # (bins, nodes, 3, 3)
        self.node_weights = half * WEIGHTS[None, :]
        self.per_fb = lumi * EFFICIENCY[name]  # signal events per fb of sigma x B

    def background(self, p: np.ndarray) -> np.ndarray:
        return (self.node_weights * np.exp(self.design @ p)).sum(axis=1)

    def signal(self, mass: float) -> np.ndarray:
        """Expected signal per bin for sigma x B = 1 fb."""
        z = (self.edges - mass) / (RESOLUTION[self.name] * mass)
        return self.per_fb * np.diff(stats.norm.cdf(z))

    def start(self) -> np.ndarray:
        """Starting values: a straight line through the log of the non-empty bins."""
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        keep = self.counts > 0
        slope, intercept = np.polyfit(centres[keep] / 1000, np.log(self.counts[keep]), 1)
        return np.array([intercept - math.log(float(np.mean(np.diff(self.edges)))), slope, 0.0])


class Likelihood:
    """-ln L of both channels as the Poisson deviance / 2 (0 for a perfect fit).

    Parameters: ``[sigma x B, p_ee (3), p_mumu (3)]``. Fits use Newton's method with the
    exact Hessian (damped when a step does not lower -ln L): a few milliseconds each.
    """

    def __init__(self, channels: list[Channel], data: list[np.ndarray] | None = None) -> None:
        self.channels = channels
        self.data = data if data is not None else [c.counts for c in channels]
        self.templates = [np.zeros_like(c.counts) for c in channels]

    def at_mass(self, mass: float) -> Likelihood:
        self.templates = [c.signal(mass) for c in self.channels]
        return self

    def asimov(self, params: np.ndarray) -> Likelihood:
        """The same model, with the expected counts of ``params`` as its data."""
        other = Likelihood(self.channels, self.expected(params))
        other.templates = self.templates
        return other

    def expected(self, params: np.ndarray) -> list[np.ndarray]:
        return [
            c.background(params[1 + 3 * i : 4 + 3 * i]) + params[0] * self.templates[i]
            for i, c in enumerate(self.channels)
        ]

    def evaluate(self, params: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Value, gradient and Hessian (value inf where a bin expects <= 0 events)."""
        size, mu = len(params), params[0]
        value, grad, hess = 0.0, np.zeros(size), np.zeros((size, size))
        for i, (c, n, t) in enumerate(zip(self.channels, self.data, self.templates, strict=True)):
            part = slice(1 + 3 * i, 4 + 3 * i)
            density = c.node_weights * np.exp(c.design @ params[part])
            nu = density.sum(axis=1) + mu * t
            if np.any(nu <= 0):
                return math.inf, grad, hess
            jac = np.einsum("bn,bnk->bk", density, c.design)
            r, w = 1.0 - n / nu, n / nu**2
            value += float(np.sum(nu - n + special.xlogy(n, n / nu)))
            grad[0] += r @ t
            grad[part] = r @ jac
            hess[0, 0] += w @ (t * t)
            hess[0, part] = hess[part, 0] = (w * t) @ jac
            hess[part, part] = np.einsum("bn,bnkl->kl", density * r[:, None], c.outer)
            hess[part, part] += jac.T @ (w[:, None] * jac)
        return value, grad, hess

    def fit(self, start: np.ndarray, mu: float | None = None) -> tuple[float, np.ndarray]:
        """Minimise -ln L; ``mu`` fixes sigma x B, else it floats with sigma x B >= 0."""
        x = np.array(start, dtype=float)
        free = np.ones(len(x), dtype=bool)
        if mu is not None:
            x[0], free[0] = mu, False
        value, grad, hess = self.evaluate(x)
        if not math.isfinite(value):
            raise ValueError("the starting point predicts no events in some bin")
        damping = 0.0
        for _ in range(200):
            g, h = grad[free], hess[np.ix_(free, free)]
            try:
                step = np.linalg.solve(h + damping * np.diag(np.abs(np.diag(h)) + 1e-9), -g)
            except np.linalg.LinAlgError:
                step = -g
            trial = x.copy()
            trial[free] += step
            new = self.evaluate(trial)
            if new[0] <= value:
                gained = value - new[0]
                x, (value, grad, hess) = trial, new
                damping = 0.0 if damping < 1e-3 else damping / 10
                if gained < 1e-10 and np.max(np.abs(step)) < 1e-7 + 1e-5 * np.max(np.abs(x)):
                    break
            else:
                damping = max(damping * 10, 1e-4)
                if damping > 1e12:
                    break
        if mu is None and x[0] < 0:  # the bound: a negative signal is fitted as none
            return self.fit(x, mu=0.0)
        return value, x


def cls(q_mu: float, q_asimov: float) -> float:
    """CLs from q~mu and its Asimov value (asymptotic formulae)."""
    root, root_a = math.sqrt(max(q_mu, 0.0)), math.sqrt(max(q_asimov, 1e-12))
    if root <= root_a:
        p_mu, one_minus_p_b = stats.norm.sf(root), stats.norm.cdf(root_a - root)
    else:
        p_mu = stats.norm.sf((q_mu + q_asimov) / (2 * root_a))
        one_minus_p_b = stats.norm.cdf((q_asimov - q_mu) / (2 * root_a))
    return float(p_mu / one_minus_p_b) if one_minus_p_b > 0 else 1.0


def scan_point(model: Likelihood, mass: float, background_only: np.ndarray) -> dict[str, float]:
    """Local significance, observed and expected limits at one mass."""
    model.at_mass(mass)
    null = model.fit(background_only, mu=0.0)[0]
    best, best_params = model.fit(background_only)
    mu_hat = float(best_params[0])
    significance = math.sqrt(max(2 * (null - best), 0.0)) if mu_hat > 0 else 0.0

    # sigma of sigma x B from the background-only Asimov data (its -ln L is 0 at mu = 0)
    asimov = model.asimov(background_only)

    def sigma_at(mu: float) -> float:
        return mu / math.sqrt(max(2 * asimov.fit(background_only, mu=mu)[0], 1e-12))

    events = sum(float(c.counts.sum()) for c in model.channels)
    sigma = sigma_at(math.sqrt(events) / sum(float(t.sum()) for t in model.templates))
    sigma = sigma_at(1.96 * sigma)  # at the median expected limit

    def observed_cls(mu: float) -> float:
        if mu <= mu_hat:
            return 1.0
        return cls(2 * (model.fit(best_params, mu=mu)[0] - best), (mu / sigma) ** 2)

    alpha = 1 - CL
    low, high = mu_hat, mu_hat + 2 * sigma
    while observed_cls(high) > alpha:
        low, high = high, 2 * high
    observed = optimize.brentq(lambda mu: observed_cls(mu) - alpha, low, high, xtol=1e-4 * sigma)
    band = {n: sigma * (stats.norm.ppf(1 - alpha * stats.norm.cdf(n)) + n) for n in range(-2, 3)}
    return {
        "mass_gev": float(mass),
        "observed_fb": float(observed),
        "expected_fb": float(band[0]),
        "expected_minus2_fb": float(band[-2]),
        "expected_minus1_fb": float(band[-1]),
        "expected_plus1_fb": float(band[1]),
        "expected_plus2_fb": float(band[2]),
        "local_significance": float(significance),
        "xsec_hat_fb": mu_hat,
    }


def crossings(
    curve: Callable[[float], float], centre: float, step: float, floor: float = -math.inf
) -> list[float]:
    """Where ``curve`` (2 delta -ln L, 0 at ``centre``) crosses 1 on each side."""
    out = []
    for sign in (-1, 1):
        far = centre + sign * step
        while curve(far) < 1 and far > floor and abs(far - centre) < 1e4 * step:
            far = centre + 2 * (far - centre)
        far = max(far, floor)
        if curve(far) < 1:
            out.append(far)
        else:
            out.append(optimize.brentq(lambda v: curve(v) - 1, *sorted((centre, far))))
    return out


def best_fit(
    model: Likelihood, scan: list[dict[str, float]], step: float, background_only: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """The largest excess of the scan, fitted with its mass free."""
    top = max(scan, key=lambda p: p["local_significance"])
    start = np.concatenate([[top["xsec_hat_fb"]], background_only[1:]])

    def profile(mass: float) -> float:
        return model.at_mass(mass).fit(start)[0]

    mass = float(
        optimize.minimize_scalar(
            profile,
            bounds=(top["mass_gev"] - step, top["mass_gev"] + step),
            method="bounded",
            options={"xatol": 0.01},
        ).x
    )
    value, params = model.at_mass(mass).fit(start)
    null = model.fit(background_only, mu=0.0)[0]
    mu_hat = float(params[0])
    xsec_interval = mass_interval = None  # no excess, no interval
    if mu_hat > 0:
        xsec_interval = crossings(
            lambda mu: 2 * (model.fit(params, mu=mu)[0] - value), mu_hat, 0.1 * mu_hat, 0.0
        )
        mass_interval = crossings(lambda m: 2 * (profile(m) - value), mass, 1.0)
        model.at_mass(mass)
    found = {
        "mass_gev": mass,
        "mass_interval_gev": mass_interval,
        "xsec_fb": mu_hat,
        "xsec_interval_fb": xsec_interval,
        "signal_events": {
            c.name: mu_hat * float(t.sum())
            for c, t in zip(model.channels, model.templates, strict=True)
        },
        "local_significance": math.sqrt(max(2 * (null - value), 0.0)) if mu_hat > 0 else 0.0,
    }
    return found, params


def read_events(inputs: Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict]:
    """Per file its event count; per channel the masses and weights of every file."""
    import uproot

    files = sorted(inputs.rglob("*.root"))
    if not files:
        sys.exit(f"no ROOT files under {inputs}/")
    listed = []
    masses: dict[str, list[np.ndarray]] = {c: [] for c in CHANNELS}
    weights: dict[str, list[np.ndarray]] = {c: [] for c in CHANNELS}
    for path in files:
        with uproot.open(path) as handle:
            arrays = handle["events"].arrays(["mll", "channel", "weight"], library="np")
        listed.append({"file": path.as_posix(), "events": len(arrays["mll"])})
        for name, code in CHANNELS.items():
            keep = arrays["channel"] == code
            masses[name].append(arrays["mll"][keep].astype(float))
            weights[name].append(arrays["weight"][keep].astype(float))
    join = np.concatenate
    return (
        listed,
        {c: join(m) for c, m in masses.items()},
        {c: join(w) for c, w in weights.items()},
    )


def goodness(model: Likelihood, params: np.ndarray) -> dict[str, dict[str, float]]:
    """Per channel: the Poisson deviance (a chi2) of a fit and its degrees of freedom."""
    out = {}
    for c, n, nu in zip(model.channels, model.data, model.expected(params), strict=True):
        deviance = 2 * float(np.sum(nu - n + special.xlogy(n, n / nu)))
        out[c.name] = {"deviance": round(deviance, 2), "bins": len(n)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=Path, default=Path("inputs"), help="ROOT files under")
    parser.add_argument("--output", type=Path, default=Path("results"))
    parser.add_argument("--luminosity", type=float, default=120.0, help="fb^-1")
    parser.add_argument("--fit-range", default="200:2000", help="LOW:HIGH in GeV")
    parser.add_argument("--bin-width", type=float, default=10.0, help="GeV")
    parser.add_argument("--scan", default="300:1500:10", help="LOW:HIGH:STEP masses in GeV")
    args = parser.parse_args(argv)
    began = time.monotonic()

    low, high = (float(v) for v in args.fit_range.split(":"))
    edges = np.arange(low, high + args.bin_width / 2, args.bin_width)
    listed, masses, weights = read_events(args.inputs)
    channels = []
    for name in CHANNELS:
        counts = np.histogram(masses[name], edges, weights=weights[name])[0]
        channels.append(Channel(name, counts, edges, args.luminosity))
    model = Likelihood(channels)
    start = np.concatenate([[0.0], *(c.start() for c in channels)])
    background_only = model.fit(start, mu=0.0)[1]

    m_low, m_high, m_step = (float(v) for v in args.scan.split(":"))
    grid = np.arange(m_low, m_high + m_step / 2, m_step)
    scan = [scan_point(model, float(m), background_only) for m in grid]
    best, best_params = best_fit(model, scan, m_step, background_only)

    args.output.mkdir(parents=True, exist_ok=True)
    fitted = {
        "edges_gev": edges.tolist(),
        "best_fit_mass_gev": best["mass_gev"],
        "channels": {
            c.name: {
                "counts": c.counts.tolist(),
                "background_only": b.tolist(),
                "signal_plus_background": sb.tolist(),
            }
            for c, b, sb in zip(
                channels, model.expected(background_only), model.expected(best_params), strict=True
            )
        },
    }
    fits = {
        "background_only": goodness(model, background_only),
        "signal_plus_background": goodness(model, best_params),
    }
    # No timings or dates: the same inputs give the same bytes, so a restarted run stages the
    # same summary out again instead of conflicting with the one already in the lake.
    summary = {
        "analysis": "dilepton resonance search on synthetic ATLAS-like data",
        "inputs": listed,
        "events": {
            **{c: len(m) for c, m in masses.items()},
            "total": sum(map(len, masses.values())),
        },
        "luminosity_fb": args.luminosity,
        "fit_range_gev": [low, high],
        "bin_width_gev": args.bin_width,
        "model": {
            "background": "dN/dm = exp(p0 + p1 x + p2 ln x), x = m / 1 TeV, per channel",
            "signal": "Gaussian, width resolution x m; events = sigma x B x L x (A x eff)",
            "resolution": RESOLUTION,
            "acceptance_x_efficiency": EFFICIENCY,
            "limits": f"{CL:.0%} CL, CLs with asymptotic q~mu, background profiled",
        },
        "background_parameters": {
            c.name: background_only[1 + 3 * i : 4 + 3 * i].tolist() for i, c in enumerate(channels)
        },
        "fits": fits,
        "best_fit": best,
        "limits": [{k: v for k, v in p.items() if k != "xsec_hat_fb"} for p in scan],
        "software": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "uproot": __import__("uproot").__version__,
        },
    }
    (args.output / "fit.json").write_text(json.dumps(fitted) + "\n")
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"events: {summary['events']} in {len(listed)} file(s)")
    for kind, per in fits.items():
        text = ", ".join(f"{n} {v['deviance']:.0f}/{v['bins']} bins" for n, v in per.items())
        print(f"{kind} fit deviance: {text}")
    print(
        f"largest excess: m = {best['mass_gev']:.1f} GeV, sigma x B = {best['xsec_fb']:.3f} fb,"
        f" local significance {best['local_significance']:.1f} sigma"
    )
    seconds = time.monotonic() - began
    print(f"{len(scan)} masses scanned, {seconds:.1f} s in all -> {args.output}/summary.json")


if __name__ == "__main__":
    main()
