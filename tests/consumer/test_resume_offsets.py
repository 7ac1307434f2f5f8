"""Where an assigned partition resumes (`offsets.resume_offsets`, ADR #003): a pure function."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING

from ingestion.engine.consumer import resume_offsets

A, B, C = ("t", 0), ("t", 1), ("t", 2)


def test_resumes_from_the_larger_of_what_the_table_recorded_and_what_the_group_committed() -> None:
    starts = resume_offsets([A, B], table_upto={A: 200, B: 50}, group_committed={A: 100, B: 80},
                            from_beginning=False)
    assert starts == {A: 200, B: 80}  # A: crash between the Iceberg and the Kafka commit


def test_a_partition_nothing_recorded_starts_where_the_group_reset_policy_says() -> None:
    assert resume_offsets([A, B], table_upto={A: 0}, group_committed={}, from_beginning=False) == {A: 0}


def test_from_beginning_ignores_the_group_but_never_rereads_what_the_table_holds() -> None:
    starts = resume_offsets([A, B, C], table_upto={A: 30}, group_committed={A: 90, B: 90}, from_beginning=True)
    assert starts == {A: 30, B: OFFSET_BEGINNING, C: OFFSET_BEGINNING}
