"""Write the bundled example model for `make demo`: the zoo's small CNN as a torch.export .pt2."""

import sys

import torch

from kpt.optimize import zoo


def main(path: str) -> None:
    model, example = zoo.build("cnn")
    ep = torch.export.export(model, example)
    torch.export.save(ep, path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/cnn.pt2")
