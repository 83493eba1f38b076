"""Plots of the dilepton search from ``fit.py``'s output (matplotlib, no display needed).

    python plot.py results

reads ``results/fit.json`` and ``results/summary.json`` and writes
``results/mass_spectrum.png`` (both channels, data with the background-only and the
signal-plus-background fits, and the significance of each bin) and ``results/limits.png``
(observed and expected 95% CL upper limits on sigma x B versus mass, with the local
significance of a signal at each mass).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

# matplotlib's font cache goes to a shared temporary directory, not the run's workspace
os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / f"mpl-{os.getuid()}"))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LABELS = {"ee": r"$ee$", "mumu": r"$\mu\mu$"}


def spectrum(fitted: dict, summary: dict, target: Path) -> None:
    edges = np.array(fitted["edges_gev"])
    centres, mass = (edges[:-1] + edges[1:]) / 2, fitted["best_fit_mass_gev"]
    fig, axes = plt.subplots(
        2, 2, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for column, (name, channel) in enumerate(fitted["channels"].items()):
        top, bottom = axes[0, column], axes[1, column]
        counts = np.array(channel["counts"])
        background = np.array(channel["background_only"])
        both = np.array(channel["signal_plus_background"])
        shown = counts > 0
        top.errorbar(
            centres[shown],
            counts[shown],
            yerr=np.sqrt(counts[shown]),
            fmt="o",
            ms=3,
            color="black",
            label="data",
        )
        top.stairs(
            background, edges, baseline=None, color="tab:blue", lw=1.5, label="background fit"
        )
        top.stairs(
            both, edges, baseline=None, color="tab:red", lw=1.2, ls="--", label="signal + bkg fit"
        )
        top.set_yscale("log")
        top.set_ylim(0.3, counts.max() * 3)
        top.set_ylabel(f"events / {edges[1] - edges[0]:g} GeV")
        top.set_title(
            f"{LABELS.get(name, name)} channel, {int(counts.sum())} events in the fit range"
        )
        top.axvline(mass, color="gray", lw=0.8, ls=":")
        top.legend(frameon=False)
        pull = (counts - background) / np.sqrt(np.maximum(background, 1e-9))
        bottom.bar(centres, pull, width=np.diff(edges), color="tab:gray")
        bottom.axhline(0, color="black", lw=0.8)
        bottom.set_ylabel(r"(data$-$bkg)/$\sqrt{\mathrm{bkg}}$", fontsize=9)
        bottom.set_xlabel(r"$m_{\ell\ell}$ [GeV]")
        bottom.set_ylim(-4.5, max(4.5, float(pull.max()) * 1.1))
    fig.suptitle(
        f"Dilepton invariant mass, {summary['luminosity_fb']:g} fb$^{{-1}}$ (synthetic):"
        f" largest excess at {mass:.0f} GeV,"
        f" {summary['best_fit']['local_significance']:.1f}$\\sigma$ local"
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def limits(summary: dict, target: Path) -> None:
    points = summary["limits"]

    def column(key: str) -> np.ndarray:
        return np.array([p[key] for p in points])

    mass = column("mass_gev")
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.5, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.fill_between(
        mass,
        column("expected_minus2_fb"),
        column("expected_plus2_fb"),
        color="#ffcc00",
        label=r"expected $\pm 2\sigma$",
    )
    top.fill_between(
        mass,
        column("expected_minus1_fb"),
        column("expected_plus1_fb"),
        color="#00cc00",
        label=r"expected $\pm 1\sigma$",
    )
    top.plot(mass, column("expected_fb"), "k--", lw=1.2, label="expected")
    top.plot(mass, column("observed_fb"), "k-", marker="o", ms=3, lw=1.5, label="observed")
    top.set_yscale("log")
    top.set_ylabel(r"95% CL limit on $\sigma \times B(Z' \to \ell\ell)$ [fb]")
    top.set_title(
        rf"$ee + \mu\mu$, {summary['luminosity_fb']:g} fb$^{{-1}}$ (synthetic), CLs asymptotic"
    )
    top.legend(frameon=False)
    bottom.plot(mass, column("local_significance"), "k-", lw=1.2)
    bottom.set_ylabel(r"local $Z$ [$\sigma$]")
    bottom.set_xlabel(r"$m_{Z'}$ [GeV]")
    bottom.set_ylim(0, max(3.0, float(column("local_significance").max()) * 1.15))
    for level in (1, 2, 3, 5):
        bottom.axhline(level, color="gray", lw=0.6, ls=":")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    results = Path(args[0] if args else "results")
    fitted = json.loads((results / "fit.json").read_text())
    summary = json.loads((results / "summary.json").read_text())
    spectrum(fitted, summary, results / "mass_spectrum.png")
    limits(summary, results / "limits.png")
    print(f"wrote {results}/mass_spectrum.png and {results}/limits.png")


if __name__ == "__main__":
    main()
