import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
sys.path.insert(0, str(Path(__file__).parent))
