"""``glimprouter bench``: run a question set through models (:mod:`.runner`), summarise the runs
(:mod:`.summary`), grade answers (:mod:`.grading`) and plot them (:mod:`.plots`)."""
