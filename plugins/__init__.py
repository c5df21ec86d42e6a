"""Built-in scorebench plugins: each module registers its components through the same hooks as third parties."""
