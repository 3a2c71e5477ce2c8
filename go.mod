module github.com/polybus/polybus

go 1.26
