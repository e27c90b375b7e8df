import pytest
from pydantic import BaseModel, ValidationError

from config.validation import describe_validation_error


class Step(BaseModel):
    tag: str
    points: int


class Pipeline(BaseModel):
    name: str
    steps: list[Step]


def error_of(value: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Pipeline.model_validate(value)
    return caught.value


def test_each_problem_is_its_location_and_message_on_one_line() -> None:
    error = error_of({"name": 1, "steps": [{"tag": "a", "points": "x"}]})
    assert describe_validation_error(error) == (
        "name: Input should be a valid string; "
        "steps.0.points: Input should be a valid integer, unable to parse string as an integer"
    )


def test_a_problem_with_the_whole_value_is_named_by_the_subject_or_stands_alone() -> None:
    error = error_of([])
    assert describe_validation_error(error, subject="file").startswith("file: Input should be")
    assert describe_validation_error(error).startswith("Input should be")


def test_past_the_most_the_rest_are_counted() -> None:
    error = error_of({"steps": [{}, {}]})  # name, and tag and points of both steps
    assert describe_validation_error(error, most=2) == (
        "name: Field required; steps.0.tag: Field required (and 3 more)"
    )
    assert describe_validation_error(error, most=5).count(";") == 4
