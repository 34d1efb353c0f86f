"""Train the yardstick's feature network once and freeze it: weights and their SHA-256.

    python -m evaluation.train_feature_net                      # 16 and 32 px, into evaluation/feature_nets/
    python -m evaluation.train_feature_net --image-size 24      # another size, added beside them
    python -m evaluation.train_feature_net --compare            # retrain here, compare with the frozen weights

The yardstick loads these files instead of training a network on each machine, so that a feature
distance is the same number wherever it is measured: retrained on another CPU, the weights differ
in rounding, and the distances with them (`--compare` shows by how much).
"""
from cli import Parser, run
from models.checkpoint import load_checkpoint, save_checkpoint

from .yardstick import FROZEN_DIR, NET_SEED, frozen_hashes, sha256, train_feature_net


def main() -> int:
    p = Parser(description="Train and freeze the shapes yardstick's feature network.")
    p.add_argument("--image-size", type=int, nargs="+", default=[16, 32], help="image sides (default: 16 32)")
    p.add_argument("--compare", action="store_true",
                   help="train on this machine and print how far the weights are from the frozen ones; write nothing")
    a = p.parse_args()
    if min(a.image_size) < 8 or any(size % 8 for size in a.image_size):
        p.error("--image-size must be multiples of 8 (the network halves the image three times)")
    hashes = frozen_hashes()
    for size in a.image_size:
        path, weights = FROZEN_DIR / f"shapes{size}.pt", train_feature_net(size).state_dict()
        if a.compare:
            frozen = load_checkpoint(path)["net"]
            gap = max((weights[k] - frozen[k]).abs().max().item() for k in frozen)
            print(f"{size} px: largest difference from the frozen weights {gap:.2e}")
            continue
        save_checkpoint({"net": weights, "image_size": size, "seed": NET_SEED}, path)
        hashes[path.name] = sha256(path)
        print(f"{path}  sha256 {hashes[path.name]}")
    if not a.compare:
        (FROZEN_DIR / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items())))
    return 0


if __name__ == "__main__":
    run(main)
