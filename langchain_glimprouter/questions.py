"""Built-in sample questions (standard library only, so scripts outside the package's
environment, such as benchmarks/entropy_fidelity.py, can load this file on its own)."""

CALIBRATION_QUESTIONS: tuple[str, ...] = (
    "Tom has 3 boxes with 12 apples in each box. He gives away 7 apples. How many are left?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
    "A shirt costs $25 and is on sale for 20% off. What is the sale price?",
    "Sara reads 18 pages a day. How many days does she need for a 270-page book?",
    "A rectangle is 8 cm long and 5 cm wide. What are its area and its perimeter?",
    "There are 24 students; a third of them walk to school and half of the rest take the bus. "
    "How many take the bus?",
    "A baker makes 144 cookies and packs them in bags of 9. How many bags does he fill?",
    "Ali is 4 years older than his sister, and together they are 30. How old is each?",
    "A tank holds 500 liters and leaks 12 liters an hour. How much is left after 15 hours?",
    "Three notebooks and two pens cost $13; a notebook costs $3. What does a pen cost?",
    "A car uses 6 liters of fuel per 100 km. How much fuel does a 350 km trip need?",
    "The sum of three consecutive integers is 72. What are they?",
)
"""Arithmetic word questions, the sample ``glimprouter calibrate`` uses without ``--questions``."""
