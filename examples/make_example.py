"""Write the bundled example model for `make demo`: the zoo's small CNN as a torch.export .pt2."""

import sys

from kpt.optimize import zoo

if __name__ == "__main__":
    zoo.export("cnn", sys.argv[1] if len(sys.argv) > 1 else "examples/cnn.pt2")
