"""ilp: what supervised fine-tuning failed to teach a language model, and why.

Nothing is downloaded at run time, by construction: the Hugging Face libraries are put in offline
mode here, before any module of the package imports them (they read these variables at import),
and data and model sources must be local paths (`ilp.data.loaders` refuses URLs and Hub ids).
Their import-time advice ("PyTorch was not found ...": the runtime uses transformers for
tokenizers only) is silenced the same way.
"""

import os

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
  os.environ[_name] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
