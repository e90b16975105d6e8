"""The paper's personalization (prompt tuning, negative mask proposal, visual injection)."""
