"""The party runtime: talks to the coordinator; the editing engine plugs in through two callbacks."""

from parties.client import ApplyDelta, ComputeStatistics, Party, PartyResult, run_party

__all__ = ["ApplyDelta", "ComputeStatistics", "Party", "PartyResult", "run_party"]
