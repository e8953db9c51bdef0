"""servicekit: what every service of the suite shares."""
