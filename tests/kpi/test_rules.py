"""The plain commissioning rules (adapter/kpi): age bands, in/out/placed-in, step dates from Task
history, due dates over bank holidays, and the reasons for delay. Hand-computed values.

2021 England & Wales bank holidays used: Monday 3 May and Monday 31 May. A child entering care
on Friday 30 April 2021 has their IHA due on Tuesday 1 June (working day 20); 2 June is day 21.
"""

from __future__ import annotations

from datetime import date

import pytest

from adapter.kpi import delay, rules
from adapter.kpi.rules import KpiRules

BS = rules.BUSINESS_STATUS
RULES = KpiRules(home_las=frozenset({"LA-DEMO-1", "991"}),
                 age_bands=((0, "0-4"), (5, "5-9"), (10, "10-15"), (16, "16-17"), (18, "18+")),
                 allowances={"notification": 3, "consent": 2, "referral": 2, "scheduling": 8,
                             "did-not-attend": 0, "report": 5})
HOME = frozenset({"BH17", "DT1"})
LA_REF = {"reference": "Organization/la"}
EPISODE = {"resourceType": "EpisodeOfCare", "id": "e1", "status": "active", "period": {"start": "2021-04-30"},
           "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "764841000000100"}]}],
           "managingOrganization": LA_REF}


def version(status: str, business: str | None, when: str, n: int, **extra) -> dict:
    body = {"resourceType": "Task", "id": "t1", "meta": {"versionId": str(n), "lastUpdated": "2026-11-01T10:00:00Z"},
            "status": status, "intent": "order", "for": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": rules.ASSESSMENT_TYPES, "code": "iha"}]},
            "authoredOn": "2021-05-07T09:00:00+01:00", "lastModified": when, **extra}
    if business:
        body["businessStatus"] = {"coding": [{"system": BS, "code": business}]}
    return body


def history(done: str = "2021-06-02") -> list[dict]:
    return [version("requested", "notification-received", "2021-05-07T09:00:00+01:00", 1),
            version("requested", "consent-received", "2021-05-11T10:00:00+01:00", 2),
            version("requested", "request-sent", "2021-05-12T10:00:00+01:00", 3),
            version("accepted", "accepted", "2021-05-13T10:00:00+01:00", 4),
            version("in-progress", "appointment-booked", "2021-05-14T10:00:00+01:00", 5),
            version("in-progress", "assessment-done", "2021-05-28T15:00:00+01:00", 6),
            version("completed", "report-sent", f"{done}T16:00:00+01:00", 7)]


def facts(versions: list[dict], birth: str = "2016-09-10", episode: dict = EPISODE) -> dict:
    return rules.assessment_facts(versions, {"birthDate": birth}, [episode], "RD3", lambda e: "LA-DEMO-1", RULES)


def test_age_band_changes_on_the_fifth_birthday():
    born = date(2016, 9, 10)
    assert rules.age_band(born, date(2021, 9, 9), RULES) == "0-4"
    assert rules.age_band(born, date(2021, 9, 10), RULES) == "5-9"
    assert rules.age_band(date(2005, 1, 1), date(2021, 6, 1), RULES) == "16-17"
    assert rules.age_band(None, date(2021, 6, 1), RULES) is None


@pytest.mark.parametrize("la, district, out, expected", [
    ("LA-OTHER-2", "BH17", True, rules.PLACED_IN),     # another LA's child, placed in our area
    ("LA-DEMO-1", "SO14", True, rules.OUT_OF_AREA),
    ("LA-DEMO-1", "BH17", None, rules.IN_AREA),        # no flag: the home-area districts decide
    ("LA-DEMO-1", "SO14", None, rules.OUT_OF_AREA),
    ("LA-DEMO-1", None, None, rules.IN_AREA),
    (None, None, None, rules.UNKNOWN),
])
def test_placement_segment(la, district, out, expected):
    subs = ([{"url": "postcodeDistrict", "valueString": district}] if district else []) + \
           ([{"url": "outOfArea", "valueBoolean": out}] if out is not None else [])
    episode = {"extension": [{"url": rules.PLACEMENT_URL, "extension": subs}]}
    assert rules.placement_segment(la, episode, RULES, HOME, None, frozenset()) == expected


def test_a_request_to_an_out_of_area_provider_is_out_of_area_after_the_child_moves_back():
    back_home = {"extension": [{"url": rules.PLACEMENT_URL, "extension": [
        {"url": "postcodeDistrict", "valueString": "BH17"}, {"url": "outOfArea", "valueBoolean": False}]}]}
    assert rules.placement_segment("LA-DEMO-1", back_home, RULES, HOME, "ZZ901", frozenset({"ZZ901"})) == rules.OUT_OF_AREA
    assert rules.placement_segment("LA-DEMO-1", back_home, RULES, HOME, "RD3", frozenset({"ZZ901"})) == rules.IN_AREA
    assert rules.placement_segment("LA-OTHER-2", back_home, RULES, HOME, "ZZ901", frozenset({"ZZ901"})) == rules.PLACED_IN


def test_step_dates_come_from_history_and_the_iha_is_due_on_working_day_20():
    row = facts(history())
    assert row["entered_care"] == date(2021, 4, 30)
    assert row["due"] == date(2021, 6, 1)            # 20 working days, 3 and 31 May excluded
    assert row["notified"] == date(2021, 5, 7)
    assert row["consent"] == date(2021, 5, 11)
    assert row["requested"] == date(2021, 5, 12)
    assert row["accepted"] == date(2021, 5, 13)
    assert row["appointment"] == date(2021, 5, 14)
    assert row["assessed"] == date(2021, 5, 28)
    assert row["done"] == row["reported"] == row["completed"] == date(2021, 6, 2)
    assert row["turnaround_wd"] == 14                # 12 May -> 2 June, 31 May excluded
    assert row["age_band"] == "0-4" and row["placement"] == rules.IN_AREA and row["la"] == "LA-DEMO-1"
    assert row["counted"] and row["provider"] == "RD3"


def test_day_20_is_on_time_and_day_21_late():
    assert rules.on_time(facts(history("2021-06-01"))["done"], date(2021, 6, 1))
    late = facts(history("2021-06-02"))
    assert not rules.on_time(late["done"], late["due"])
    assert delay.is_late(late, date(2021, 7, 1))
    assert not delay.is_late(facts(history("2021-06-01")), date(2021, 7, 1))


def test_without_last_modified_the_server_time_is_the_step_time():
    v1 = version("requested", "notification-received", "x", 1)
    v2 = version("requested", "consent-received", "x", 2)
    v1.pop("lastModified"), v2.pop("lastModified")
    v2["meta"]["lastUpdated"] = "2021-05-09T23:30:00Z"   # 00:30 on 10 May in England (BST)
    row = facts([v1, v2])
    assert row["notified"] == date(2021, 5, 7)           # the first version: authoredOn
    assert row["consent"] == date(2021, 5, 10)


def test_cancelled_is_not_counted_and_other_tasks_have_no_facts():
    assert not facts(history()[:2] + [version("cancelled", "cancelled-left-care", "2021-05-20", 3)])["counted"]
    other = version("requested", None, "2021-05-07", 1)
    other["code"] = {"text": "something else"}
    assert facts([other]) is None


def test_delay_segments_of_a_late_iha_name_the_segment_over_its_allowance_by_most():
    row = facts(history("2021-06-02"))
    found = delay.delay_segments(row, date(2021, 7, 1), RULES)
    assert found.segments == {"notification": 4, "consent": 2, "referral": 1, "scheduling": 12,
                              "did-not-attend": 0, "report": 2}
    assert found.total == 21 and sum(found.segments.values()) == 21
    assert found.cause == "scheduling" and found.excess == 4 and not found.running


def test_a_missed_appointment_counts_in_did_not_attend():
    versions = history("2021-06-02")
    versions.insert(5, version("in-progress", "did-not-attend", "2021-05-20T10:00:00+01:00", 6))
    row = facts(versions)
    assert row["dna_count"] == 1 and row["did_not_attend"] == date(2021, 5, 20)
    found = delay.delay_segments(row, date(2021, 7, 1), RULES)
    assert found.segments["scheduling"] == 6 and found.segments["did-not-attend"] == 6
    assert found.cause == "did-not-attend"   # 6 over an allowance of 0 beats scheduling's -2


def test_a_clock_still_running_waits_at_the_next_step():
    versions = [version("requested", "notification-received", "2021-05-04T09:00:00+01:00", 1)]
    row = facts(versions)
    found = delay.delay_segments(row, date(2021, 6, 4), RULES)
    assert found.running and found.end == date(2021, 6, 4)
    assert found.segments["notification"] == 1 and found.segments["consent"] == 22
    assert found.cause == "consent"
    assert delay.is_late(row, date(2021, 6, 2)) and not delay.is_late(row, date(2021, 6, 1))


def test_late_notification_is_the_cause_when_the_la_told_health_late():
    versions = [version("requested", "notification-received", "2021-05-21T09:00:00+01:00", 1),
                version("completed", "report-sent", "2021-06-04T09:00:00+01:00", 2)]
    found = delay.delay_segments(facts(versions), date(2021, 7, 1), RULES)
    assert found.segments["notification"] == 14 and found.cause == "notification"
    summary = delay.summarise([found, delay.delay_segments(facts(history("2021-06-02")), date(2021, 7, 1), RULES)])
    assert summary["late"] == 2 and summary["caused"]["notification"] == 1 and summary["caused"]["scheduling"] == 1
    assert summary["total_days"]["notification"] == 18 and summary["mean_days"]["notification"] == 9.0


def test_the_episode_current_on_the_day_is_chosen():
    old = dict(EPISODE, id="a", period={"start": "2020-01-01", "end": "2021-03-15"}, managingOrganization={"x": 1})
    new = dict(EPISODE, id="b", period={"start": "2021-03-16"})
    assert rules.choose_episode([new, old], date(2021, 3, 10))["id"] == "a"
    assert rules.choose_episode([new, old], date(2021, 3, 25))["id"] == "b"


def test_configured_rules_load():
    loaded = rules.load_kpi_rules()
    assert {"LA-DEMO-1", "991"} <= loaded.home_las
    assert sum(loaded.allowances.values()) == loaded.iha_working_days == 20


def consent(kind: str, when: str, purpose: str = "assessment") -> dict:
    return {"resourceType": "Consent", "status": "active", "dateTime": when,
            "provision": {"type": kind, "purpose": [{"system": rules.CONSENT_PURPOSE, "code": purpose}]}}


def test_consent_to_the_iha_comes_from_the_childs_consents_when_the_task_does_not_say():
    given = [consent("permit", "2020-01-01"), consent("deny", "2021-05-05"), consent("permit", "2021-05-10"),
             consent("permit", "2021-05-06", purpose="information-sharing")]
    assert rules.assessment_consent_date(given, date(2021, 4, 30)) == date(2021, 5, 10)
    row = rules.assessment_facts(history()[:1], {"birthDate": "2016-09-10"}, [EPISODE], "RD3",
                                 lambda e: "LA-DEMO-1", RULES, consents=given)
    assert row["consent"] == date(2021, 5, 10)
    assert facts(history())["consent"] == date(2021, 5, 11)   # the Task's own consent-received step


def test_own_consent_from_the_sixteenth_birthday():
    own = consent("permit", "2021-08-20")
    own["extension"] = [{"url": rules.GRANTOR_URL, "valueCoding": {"system": rules.GRANTOR, "code": "young-person"}}]
    parent = consent("permit", "2021-08-21")
    parent["extension"] = [{"url": rules.GRANTOR_URL, "valueCoding": {"system": rules.GRANTOR, "code": "parent-with-pr"}}]
    rha = [dict(version("requested", "request-sent", "2021-08-01", 1), code={"coding": [
        {"system": rules.ASSESSMENT_TYPES, "code": "rha"}]}, restriction={"period": {"end": "2021-09-15"}})]
    row = rules.assessment_facts(rha, {"birthDate": "2005-01-01"}, [EPISODE], "RDY", lambda e: "LA-DEMO-1",
                                 RULES, consents=[own, parent])
    assert row["age_at_due"] == 16 and row["own_consent"] == date(2021, 8, 20)
    younger = rules.assessment_facts(rha, {"birthDate": "2005-08-21"}, [EPISODE], "RDY", lambda e: "LA-DEMO-1",
                                     RULES, consents=[own, parent])
    assert younger["own_consent"] is None   # signed before turning 16
    assert rules.assessment_facts(rha, {"birthDate": "2005-01-01"}, [EPISODE], "RDY", lambda e: "LA-DEMO-1",
                                  RULES, consents=[parent])["own_consent"] is None
