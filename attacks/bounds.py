"""The declared bounds a SmolLM2 session would set for ``noise:Z`` (torch-free: the CLI's defaults read them).

A quick check of 10 bundled requests on smollm2-135m (docs/dp.md has the command) measured ‖k‖ from 1.9 to 15.1
over the edited layers 3-7, ‖z* − h‖ from 89 to 120 at the last edited layer, so a first-layer residual
‖z* − h‖ / 5 of 18 to 24. κ and ρ below clip few keys and residuals of the sequential variant (its per-layer
residuals stay near the first layer's); the oneshot variant's later layers carry up to the whole ‖z* − h‖ and are
clipped more.
"""

KEY_NORM_BOUND = 16.0
RESIDUAL_NORM_BOUND = 32.0
