"""Experiments on top of the library: `comparison` (`genefl compare`), `study` (`genefl newcomers`), `privacy`
(`genefl attack`), `plots`, and `starts` (what each newcomer was sent, recorded for the study)."""
