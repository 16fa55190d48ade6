"""People in the loop: reviewed labels a run trusts (``trusted``) and the rows worth a review
(``budget``)."""

from noiseal_ray.review.budget import RULES, budget_records, review_priority, select_for_review
from noiseal_ray.review.trusted import read_reviewed, read_reviewed_files

__all__ = ["RULES", "budget_records", "read_reviewed", "read_reviewed_files", "review_priority", "select_for_review"]
