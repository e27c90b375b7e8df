"""Field types shared by schemas, with the limits of the columns they end up in."""

from typing import Annotated

from pydantic import AfterValidator, EmailStr, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
CustomerName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
# Logging in with a password that could never have been set is simply wrong, not invalid.
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Email = Annotated[EmailStr, AfterValidator(str.lower)]
