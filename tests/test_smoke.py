import captcha_predict
import captcha_test


def test_tiny_model_is_tested_and_predicted_from_the_same_file(tiny_model, tiny_data, cli):
    code, out, _ = cli(captcha_test.main, "--model", tiny_model, "--data", tiny_data / "test")
    assert code == 0 and out.startswith("test: 60 captchas, ")
    code, out, err = cli(captcha_predict.main, "--model", tiny_model, tiny_data / "predict")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 20 and all(len(line.split("\t")) == 3 for line in lines)
    assert "of 20 labelled images" in err
