"""The LAC health team's and the commissioner's dashboard (issue 7): data, HTML and charts."""
