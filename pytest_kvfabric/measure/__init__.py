"""What a run measured (pure): statistics, SLO checks, the result record, histograms, capacity."""
