module github.com/sluiceproxy/sluice/robustness

go 1.26.0

replace github.com/sluiceproxy/sluice => ../
