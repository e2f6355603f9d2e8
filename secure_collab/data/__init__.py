"""Edit requests (CounterFact, zsRE, plain JSONL), the bundled countryinfo set, and public text corpora."""
