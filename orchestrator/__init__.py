"""Co-training rounds, selection policies, configuration, the Python API and the CLI.

The only package that imports the others: it uses views, agents and store.
"""
