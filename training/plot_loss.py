"""Render the training loss curve (loss.csv from train.py) as an SVG for the model's folder.

Train loss per step is noisy at batch 16, so it is drawn faint with a moving
average over it; validation loss (every eval_every steps) is drawn as points.

Usage: plot_loss.py [--csv training/work/loss.csv] [--out models/demo/loss.svg]
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

HERE = Path(__file__).resolve().parent


def moving_average(values: list, width: int) -> list:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", type=Path, default=HERE / "work/loss.csv")
    parser.add_argument("--out", type=Path, default=HERE.parent / "models/demo/loss.svg")
    args = parser.parse_args()
    rows = list(csv.DictReader(args.csv.open()))
    if not rows:
        raise SystemExit(f"{args.csv}: no rows")
    # A resumed run re-logs the steps after its last checkpoint: keep the latest row of each step.
    by_step = {int(r["step"]): r for r in rows}
    steps = sorted(by_step)
    tokens = [int(by_step[s]["tokens"]) / 1e6 for s in steps]
    train = [float(by_step[s]["train_loss"]) for s in steps]
    valid = [(int(by_step[s]["tokens"]) / 1e6, float(by_step[s]["valid_loss"]))
             for s in steps if by_step[s]["valid_loss"]]
    minutes = float(by_step[steps[-1]]["elapsed_s"]) / 60

    plt.rcParams.update({"font.size": 10, "svg.fonttype": "none", "svg.hashsalt": "qwen3-demo"})
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, train, color="#9ab8d8", linewidth=0.6, label="train (per step)")
    ax.plot(tokens, moving_average(train, 50), color="#1f5a96", linewidth=1.6, label="train (mean of 50 steps)")
    if valid:
        ax.plot(*zip(*valid), "o-", color="#c0392b", markersize=3.5, linewidth=1, label="validation")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_ylim(bottom=max(0.0, min(train) - 0.3), top=min(max(train), 8.5) + 0.2)
    last = f"valid {valid[-1][1]:.2f}" if valid else f"train {train[-1]:.2f}"
    ax.set_title(f"demo Qwen3: {steps[-1]} steps, {tokens[-1]:.1f} M tokens, {minutes:.0f} min on 2 CPU cores, {last}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, format=args.out.suffix.lstrip(".") or "svg", metadata={"Date": None} if args.out.suffix != ".png" else None)
    print(f"{args.out}: {len(steps)} steps, last train {train[-1]:.3f}, {last}")


if __name__ == "__main__":
    main()
