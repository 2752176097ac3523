from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from app.core.schemas import Id, Out, Schema

Kind = Literal["single_choice", "multiple_choice", "true_false", "fill_in", "short_answer"]
QuestionState = Literal["draft", "approved", "retired"]
Difficulty = Annotated[int, Field(ge=1, le=5, description="1 easy … 5 hard (easy=1, medium=3, hard=5)")]
DifficultyIn = Annotated[
    int | Literal["easy", "medium", "hard"], Field(description="1 … 5, or easy (1), medium (3), hard (5)")
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
OptionText = Annotated[str, StringConstraints(min_length=1, max_length=500)]
AnswerText = Annotated[str, StringConstraints(max_length=2000)]
Score = Annotated[float, Field(gt=0, le=1000)]
MAX_QUESTIONS_PER_PAPER = 500


class ItemLink(Schema):
    item_id: Id
    version: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="The item version the question was written against; default: its published (else latest) version",
    )


class QuestionCreate(Schema):
    """`options`: the choices' texts, keyed A, B, C … in order (choice questions only, 2–8, all
    different after folding case, width and traditional characters). `answer`: the right keys
    (single choice: one; multiple choice: one or more), `["true"]` / `["false"]`, the accepted
    fill-in answers (any of them counts), or a reference answer for the grader (short answer)."""

    kind: Kind
    stem: Text
    options: list[OptionText] = Field(default_factory=list, max_length=8)
    answer: list[AnswerText] = Field(default_factory=list, max_length=20)
    explanation: str = Field("", max_length=5000)
    difficulty: DifficultyIn = 2
    categories: list[Id] = Field(default_factory=list, max_length=20, description="Taxonomy node ids")
    items: list[ItemLink] = Field(default_factory=list, max_length=20, description="The items it tests")


class QuestionUpdate(Schema):
    """Only what is sent changes (If-Match required). An approved question that is edited goes back
    to draft. `needs_review: false` marks it checked against the current knowledge: its links move to
    the items' published versions."""

    stem: Text | None = None
    options: list[OptionText] | None = Field(None, max_length=8)
    answer: list[AnswerText] | None = Field(None, max_length=20)
    explanation: str | None = Field(None, max_length=5000)
    difficulty: DifficultyIn | None = None
    categories: list[Id] | None = Field(None, max_length=20)
    items: list[ItemLink] | None = Field(None, max_length=20)
    needs_review: Literal[False] | None = None


class OptionOut(BaseModel):
    key: str
    text: str


class LinkOut(BaseModel):
    item_id: int
    version: int
    role: str
    link: str


class QuestionOut(Out):
    id: int
    kind: str
    stem: str
    options: list[OptionOut]
    answer: list[str]
    explanation: str
    difficulty: int
    categories: list[int]
    items: list[LinkOut]
    state: str
    needs_review: bool
    review_reason: str | None
    source: str
    created_by: str
    updated_by: str
    approved_by: str | None
    approved_at: datetime | None
    created_at: datetime
    updated_at: datetime
    row_version: int
    etag: str


class GenerateIn(Schema):
    """Single-choice questions from published FAQ items: the item's answer is the right option, the
    answers of the most confusable items (the search engine: same category, similar question,
    different answer) the wrong ones. Name the items, or a category (its subtree) to take `count`
    items from (those without a generated question of their published version yet)."""

    item_ids: list[Id] = Field(default_factory=list, max_length=200)
    category_id: Id | None = None
    count: int = Field(10, ge=1, le=200)
    distractors: int = Field(3, ge=1, le=5, description="Wrong options per question")
    difficulty: DifficultyIn = 2


class SkippedOut(BaseModel):
    item_id: int
    reason: str = Field(
        description="not_faq, not_published, not_found, no_answer, already_generated, not_enough_distractors"
    )
    detail: str


class GenerateOut(BaseModel):
    created: list[QuestionOut]
    skipped: list[SkippedOut]


class ApproveManyIn(Schema):
    question_ids: list[Id] = Field(min_length=1, max_length=500)


class ApproveManyOut(BaseModel):
    approved: list[int]
    already: list[int] = Field(description="Already approved")


# ---------------------------------------------------------------- papers


class PaperRule(Schema):
    """Take `count` approved questions of `kind` (and `difficulty`, when given) from `categories`
    (each with its subtree; empty: any category), each worth `score`."""

    kind: Kind
    count: int = Field(ge=1, le=MAX_QUESTIONS_PER_PAPER)
    difficulty: DifficultyIn | None = None
    categories: list[Id] = Field(default_factory=list, max_length=20)
    score: Score = 1


class PaperQuestionIn(Schema):
    question_id: Id
    score: Score = 1


class PaperCreate(Schema):
    """By rules (`rules`) or by hand (`questions`), not both. `total_score`, when sent, must be what
    the questions add up to. Only approved questions not waiting for review go into a paper."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str = Field("", max_length=5000)
    rules: list[PaperRule] = Field(default_factory=list, max_length=50)
    questions: list[PaperQuestionIn] = Field(default_factory=list, max_length=MAX_QUESTIONS_PER_PAPER)
    total_score: float | None = Field(None, gt=0, le=100_000)
    pass_score: float | None = Field(None, ge=0, le=100_000, description="Default: 60 % of the total")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Repeatable random picks (rules)")


class PaperQuestionOut(BaseModel):
    position: int
    question_id: int
    kind: str
    stem: str
    options: list[OptionOut]
    answer: list[str]
    explanation: str
    difficulty: int
    score: float
    items: list[LinkOut]


class PaperOut(BaseModel):
    id: int
    title: str
    description: str
    mode: str
    rules: list[dict[str, Any]]
    total_score: float
    pass_score: float
    question_count: int
    questions: list[PaperQuestionOut]
    created_by: str
    created_at: datetime


class PaperSummary(BaseModel):
    id: int
    title: str
    mode: str
    total_score: float
    pass_score: float
    question_count: int
    created_by: str
    created_at: datetime


# ---------------------------------------------------------------- exams


class ExamAudienceIn(Schema):
    """Who takes it: anyone matching one entry (a role, a department with its sub-departments, a user)."""

    roles: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=50, description="Role names"
    )
    departments: list[Id] = Field(default_factory=list, max_length=200)
    users: list[Id] = Field(default_factory=list, max_length=5000)


class ExamCreate(Schema):
    paper_id: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    audience: ExamAudienceIn
    opens_at: AwareDatetime
    closes_at: AwareDatetime
    time_limit_minutes: int = Field(ge=1, le=24 * 60)
    pass_score: float | None = Field(None, ge=0, le=100_000, description="Default: the paper's")


class ExamOut(BaseModel):
    id: int
    paper_id: int
    title: str
    audience: dict[str, list[Any]]
    opens_at: datetime
    closes_at: datetime
    time_limit_minutes: int
    pass_score: float
    total_score: float
    question_count: int
    state: str
    created_by: str
    created_at: datetime
    etag: str


class MyExamOut(BaseModel):
    id: int
    title: str
    opens_at: datetime
    closes_at: datetime
    time_limit_minutes: int
    total_score: float
    pass_score: float
    question_count: int
    status: str = Field(description="upcoming, open (not started), in_progress, submitted, missed")
    attempt_id: int | None
    deadline: datetime | None
    score: float | None
    passed: bool | None


class AttemptQuestionOut(BaseModel):
    """A question as the examinee sees it: no answer key, no explanation (until released)."""

    position: int
    question_id: int
    kind: str
    stem: str
    options: list[OptionOut]
    score: float


class AttemptOut(BaseModel):
    id: int
    exam_id: int
    title: str
    state: str = Field(description="in_progress, grading (short answers wait for a grader), completed")
    started_at: datetime
    deadline: datetime = Field(description="min(started_at + time limit, closes_at); enforced by the server")
    remaining_seconds: int
    saved_at: datetime | None
    submitted_at: datetime | None
    auto_submitted: bool
    answers: dict[str, Any]
    questions: list[AttemptQuestionOut]
    etag: str


AnswerValue = str | bool | list[Annotated[str, StringConstraints(max_length=2000)]]


class AnswersIn(Schema):
    """question id -> answer: single choice an option key ("B"), multiple choice a list of keys,
    true/false a boolean, fill-in and short answer a text (at most 2,000 characters)."""

    answers: dict[str, AnswerValue] = Field(default_factory=dict, max_length=MAX_QUESTIONS_PER_PAPER)


class SubmitIn(Schema):
    answers: dict[str, AnswerValue] | None = Field(
        None, max_length=MAX_QUESTIONS_PER_PAPER, description="Final answers; omitted: the saved ones"
    )


class ResultQuestionOut(BaseModel):
    position: int
    question_id: int
    kind: str
    stem: str
    score: float
    earned: float | None = Field(description="None while a short answer waits for its grader")
    correct: bool | None
    your_answer: Any
    right_answer: list[str] | None = Field(description="Shown once the exam has closed (the answer key's release)")
    explanation: str | None
    study: list[LinkOut] = Field(description="The items to study for this question")
    grader_comment: str | None = None


class ResultOut(BaseModel):
    attempt_id: int
    exam_id: int
    user_id: int
    username: str | None = None
    department_id: int | None
    state: str
    score: float | None = Field(description="Objective score at once; the final one after grading")
    objective_score: float
    total_score: float
    pass_score: float
    passed: bool | None = Field(description="None until every short answer is graded")
    submitted_at: datetime | None
    auto_submitted: bool
    answers_released: bool
    wrong: list[ResultQuestionOut] = Field(description="Each question not answered fully right")
    questions: list[ResultQuestionOut] | None = Field(None, description="Every question (detail views)")


class ResultRow(BaseModel):
    attempt_id: int
    user_id: int
    username: str
    department_id: int | None
    state: str
    score: float | None
    passed: bool | None
    started_at: datetime
    submitted_at: datetime | None
    auto_submitted: bool


class DepartmentResult(BaseModel):
    department_id: int | None
    department: str | None
    attempts: int
    completed: int
    passed: int
    pass_rate: float | None
    average_score: float | None
    max_score: float | None
    min_score: float | None


class ExamResultsOut(BaseModel):
    exam_id: int
    total_score: float
    pass_score: float
    attempts: int
    completed: int
    waiting_for_grading: int
    passed: int
    departments: list[DepartmentResult]


class GradingEntry(BaseModel):
    attempt_id: int
    exam_id: int
    exam_title: str
    user_id: int
    submitted_at: datetime | None
    questions: list[dict[str, Any]] = Field(description="The short answers waiting: question, score, reference, answer")


class GradeIn(Schema):
    question_id: Id
    score: float = Field(ge=0, le=1000)
    comment: str = Field("", max_length=2000)


class GradesIn(Schema):
    grades: list[GradeIn] = Field(min_length=1, max_length=MAX_QUESTIONS_PER_PAPER)
