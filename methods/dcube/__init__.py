"""D-Cube (Diffusion-Driven Diagnosis): classification on a frozen image diffusion
model's hyper-features, layers chosen by a Gaussianity (Kolmogorov-Smirnov) test.

Stage 1 trains a class-conditional U-ViT on the training images with the noise loss on
both images of a pair plus a contrastive loss on their mid-block features (the pair
shares t and noise; same class with probability 1/2; target 0 for the same class, a
hinge of margin 0.1 otherwise). It is cached by a hash of its settings, data and seed,
and reused by stage 2 and by "+Syn" (``syn:<method>``).

Stage 2 freezes it, feeds the clean image with a random t, tests every block output
against a Gaussian (KS, p < 0.05 = non-Gaussian = kept, as in the paper, one value per
image over several batches: methods/dcube/layers.py; the authors' code hard-codes three
layers: ``feature_layers: code``), and trains the head: the
kept layers' tokens (LayerNorm, token-mixing 1x1 conv onto a grid), a timm CNN's
sub-features and class scores (sum-pooled) that expand the single-channel fused map to
C channels, 3x3 + 5x5 conv stages and two FC layers. Loss = CE + lambda_cyc cycle +
0.1 consistency (logits of the image vs its horizontal flip), EMA of the head weights.

Paper vs authors' code (medical-ai-cv/D-Cube), each behind an option:
- ``cycle_form``: "paper" feeds the softmax-weighted class embedding of the prediction
  to the frozen model, so the cycle loss trains the classifier; "code" uses the argmax
  under no_grad, a constant that trains nothing.
- ``ema_decay``: the paper evaluates an EMA (0.999) of the head; the code computes one
  and never uses it (``ema_decay: null``).
- ``feature_layers``: "ks" (paper) or "code" (mid block, out blocks 1 and 2).
- Sub-feature CNN: ResNet-50 as in the code (the paper's tables name ResNeXt-101);
  ImageNet weights only from a local ``sub_weights_file`` (no downloads here).
"""
