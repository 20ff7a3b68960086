"""`harness fuzz`: programs of memory operations (program.py), run in a guest (runner.py) and judged
(oracle.py); a campaign (campaign.py) keeps a corpus and shrinks findings (shrink.py) into reports
(report.py); difference.py runs the same programs on a base and a patched kernel."""
