"""matplotlib, optional: the experiments draw figures only where it is installed (`.[figures]`)."""
from pathlib import Path


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None (after saying so) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the figures (pip install -e '.[figures]')")
        return None
    return plt


def save(fig, path: Path) -> None:
    """Write the figure and free it (pyplot keeps every open figure alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
