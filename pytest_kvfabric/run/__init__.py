"""Running a scenario: the runner that starts and joins the two agents, the sweep plan, the capacity probe."""
