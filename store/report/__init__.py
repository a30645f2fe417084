"""``cotrain report``: one self-contained HTML page about a run, for people to look at.

Plots are drawn with matplotlib and embedded as SVG data URIs (no script, no network):
per-view test accuracy and macro-F1 per round, labels added per round by source, the view
agreement matrix, confusion matrices (the ensemble on held-out items; pseudo-labels against
reviewers' labels), the confidence of accepted vs passed-over candidates, the estimated
precision of the labels so far against coverage (one point per round), and LLM tokens and
dollars per round. Tables list each view's latest estimates (accuracy, weight), the most
disputed items with each view's vote and a link to the debate transcript, the reviewers'
measured precision per source, and unreadable items.

``data`` reads the rows, ``plots`` draws, ``page`` renders and writes.
"""
from store.report.data import report_data
from store.report.page import render, write_report

__all__ = ["render", "report_data", "write_report"]
