module overseer.example/baseline-go-http

go 1.19
