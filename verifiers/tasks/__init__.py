"""The built-in tasks: each module is one verifier plus its generator, registered with `verifiers.register`."""
