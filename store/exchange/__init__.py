"""Labels leaving and coming back: exports people and tools load (flat files, Hugging Face
datasets, Label Studio and Argilla tasks) and the reviews those tools send back.

``query`` is the one query every export reads; ``export`` writes flat files and guards
every output path; ``annotation`` writes the Hugging Face and annotation-tool formats;
``reviews`` reads reviewers' answers back.
"""
