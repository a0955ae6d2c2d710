"""Model pieces shared by methods and the harness: timm models and their weights, the
cache of pretrained parts."""
