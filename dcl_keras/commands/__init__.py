"""The command-line tools: one module per command, each with absl flags, `main(argv)` and `run()`.

`pyproject.toml` installs them as console commands (dcl-train, dcl-evaluate,
dcl-export, dcl-predict, dcl-visualize-rcm, dcl-analyze, dcl-sweep); the
scripts in bin/ are thin wrappers of the same `run()`, and
`python -m dcl_keras.commands.<name>` runs them too. Each module picks the
Keras backend (--backend) before Keras is imported, so import only one of them
per process.
"""
